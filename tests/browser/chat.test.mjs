// The chat and completion views against a real tandem-server: streaming,
// stop, persistence across a reload, the dashboard, and a readable error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, eventually } from './harness.mjs';

// Greedy decoding, no penalties: the demo model's replies are then fixed, and
// "the beginning of the world" runs on until the context is full.
const GREEDY = { temperature: 0, top_p: 1, top_k: 0, min_p: 0, repetition_penalty: 1, max_tokens: null, seed: null, stop: '' };
const LONG_PROMPT = 'Tell me about the beginning of the world'; // as the first chat message
const LONG_COMPLETION = 'And the LORD said unto Moses';
const SHORT_PROMPT = 'Tell me a fortune';

let server;
let browser;
let page;

before(async () => {
  server = await startServer({ ctx: 512 });
  browser = await launchBrowser();
  page = browser.page;
  await page.addInitScript((settings) => {
    if (!localStorage.getItem('tandem.settings')) localStorage.setItem('tandem.settings', JSON.stringify(settings));
  }, GREEDY);
  await page.goto(server.base + '/');
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Records the assistant reply's text length at every DOM change while it streams.
async function watchStreaming() {
  await page.evaluate(() => {
    const w = window;
    w.__lengths = [];
    w.__observer?.disconnect();
    w.__observer = new MutationObserver(() => {
      const el = document.querySelector('.message.assistant.streaming .content');
      if (el) w.__lengths.push(el.textContent.length);
    });
    w.__observer.observe(document.querySelector('.messages'), { subtree: true, childList: true, characterData: true });
  });
}

async function send(text) {
  await page.fill('.composer-input', text);
  await page.press('.composer-input', 'Enter');
}

async function lastAssistant() {
  const node = page.locator('.message.assistant').last();
  return { node, text: (await node.locator('.content').textContent()) ?? '', meta: (await node.locator('.meta').textContent()) ?? '' };
}

async function setMaxTokens(value) {
  await page.click('.settings-button');
  await page.fill('#setting-max_tokens', value);
  await page.press('#setting-max_tokens', 'Tab'); // commits the field (change event)
  await page.getByRole('button', { name: 'Close settings' }).click();
}

test('a message streams into the chat, with the sampling settings applied', async () => {
  await setMaxTokens('48');
  assert.equal(JSON.parse(await page.evaluate(() => localStorage.getItem('tandem.settings'))).max_tokens, 48);
  await watchStreaming();
  await send(LONG_PROMPT);
  await page.waitForSelector('.message.assistant.streaming', { timeout: 5000 });
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("tokens")', { timeout: 30000 });
  const lengths = await page.evaluate(() => window.__lengths);
  const growing = [...new Set(lengths.filter((n) => n > 0))];
  assert.ok(growing.length >= 3, `the reply should arrive in pieces, saw lengths ${JSON.stringify(lengths.slice(0, 40))}`);
  const { text, meta } = await lastAssistant();
  assert.ok(text.trim().length > 0, 'the reply has text');
  assert.match(meta, /^48 tokens/, 'max_tokens from Settings reached the server');
  assert.match(meta, /hit max tokens/);
  assert.match(meta, /TTFT \d+ ms/);
  assert.equal(await page.locator('.message.user .content').first().textContent(), LONG_PROMPT);
  assert.match(await page.locator('.conv.active .conv-title').textContent(), /Tell me about the beginning/);
  await setMaxTokens('');
});

const streamedText = async (selector) => {
  const el = page.locator(selector);
  return (await el.count()) ? ((await el.textContent()) ?? '') : '';
};

test('Stop ends a reply mid-stream and keeps what arrived', async () => {
  await page.click('.new-chat');
  await send(LONG_PROMPT);
  // Wait until some text is on screen, then stop.
  await eventually(async () => (await streamedText('.message.assistant.streaming .content')).length > 20, 20000, 'streamed text');
  assert.equal(await page.locator('.composer .send').textContent(), 'Stop');
  await page.click('.composer .send');
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("stopped")', { timeout: 10000 });
  const { text, meta } = await lastAssistant();
  const tokens = Number(/(\d+) tokens/.exec(meta)[1]);
  assert.ok(tokens > 0 && tokens < 400, `stopped early, after ${tokens} tokens (the context allows ~490)`);
  assert.ok(text.length > 20, 'the partial reply stays');
  assert.equal(await page.locator('.composer .send').textContent(), 'Send');
});

test('regenerate replaces the last reply; edit and resend truncates the conversation', async () => {
  const before = await page.locator('.message').count();
  await page.locator('.message.assistant').last().getByRole('button', { name: 'Regenerate' }).click();
  await page.waitForSelector('.message.assistant.streaming', { timeout: 5000 });
  await page.click('.composer .send'); // stop it again: the greedy reply is long
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("stopped")', { timeout: 10000 });
  assert.equal(await page.locator('.message').count(), before, 'regenerate replaces, it does not append');

  await page.locator('.message.user').first().getByRole('button', { name: 'Edit' }).click();
  await page.fill('.edit-input', SHORT_PROMPT + ' please');
  await page.getByRole('button', { name: 'Save & send' }).click();
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("tokens")', { timeout: 30000 });
  assert.equal(await page.locator('.message').count(), 2, 'editing the first message drops everything after it');
  assert.equal(await page.locator('.message.user .content').first().textContent(), SHORT_PROMPT + ' please');
});

test('the conversation survives a reload (IndexedDB)', async () => {
  const { text } = await lastAssistant();
  const title = await page.locator('.conv.active .conv-title').textContent();
  await page.reload();
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
  await page.waitForSelector('.message.assistant', { timeout: 5000 });
  assert.equal(await page.locator('.conv.active .conv-title').textContent(), title);
  assert.equal(await page.locator('.message.user .content').first().textContent(), SHORT_PROMPT + ' please');
  assert.equal((await lastAssistant()).text, text);
  // A new conversation joins the list; renaming and deleting work.
  const listed = await page.locator('.conv').count();
  await page.click('.new-chat');
  await send(SHORT_PROMPT);
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("tokens")', { timeout: 30000 });
  assert.equal(await page.locator('.conv').count(), listed + 1);
  await page.locator('.conv.active').getByRole('button', { name: 'Rename' }).click();
  await page.fill('.conv-rename', 'Renamed chat');
  await page.press('.conv-rename', 'Enter');
  await page.waitForSelector('.conv.active .conv-title:has-text("Renamed chat")');
  const del = page.locator('.conv.active').getByRole('button', { name: 'Delete' });
  await del.click();
  await del.click();
  await eventually(async () => (await page.locator('.conv').count()) === listed, 5000, 'the renamed conversation to go');
  assert.equal(await page.locator('.conv-title:has-text("Renamed chat")').count(), 0);
});

test('completion mode continues a prompt and can be stopped', async () => {
  await page.goto(server.base + '/#completion');
  await page.fill('.completion-prompt', 'In the beginning');
  await page.click('.completion-main button.primary');
  await page.waitForSelector('.completion-view .meta:has-text("tokens")', { timeout: 30000 });
  const out = await page.locator('.completion-output').textContent();
  assert.ok(out.startsWith('In the beginning') && out.length > 'In the beginning'.length, `output: ${out}`);

  await page.fill('.completion-prompt', LONG_COMPLETION);
  await page.click('.completion-main button.primary');
  await eventually(async () => (await streamedText('.completion-output .generated')).length > 10, 20000, 'completion text');
  await page.click('.completion-main button.stop');
  await page.waitForSelector('.completion-view .meta:has-text("stopped")', { timeout: 10000 });
});

test('the dashboard shows live server state', async () => {
  await page.goto(server.base + '/#dashboard');
  const polls = async () => Number(await page.locator('.dashboard-view').getAttribute('data-polls'));
  const first = await polls();
  await eventually(async () => (await polls()) >= first + 2, 10000, 'two more status polls');
  await eventually(async () => /demo-q8_0/.test(await page.locator('.cards').textContent()), 5000, 'model card');
  const tokens = async () => Number((await page.locator('.card[data-card="tokens"] .card-value').textContent()).replace(/,/g, ''));
  const before = await tokens();
  // Generate from another tab (completion) and watch the dashboard move.
  await page.goto(server.base + '/#completion');
  await page.fill('.completion-prompt', 'In the beginning');
  await page.click('.completion-main button.primary');
  await page.waitForSelector('.completion-view .meta:has-text("tokens")', { timeout: 30000 });
  await page.goto(server.base + '/#dashboard');
  await eventually(async () => (await tokens()) > before, 10000, 'the token count to grow');
  assert.match(await page.locator('.chart:has-text("TTFT per request") .chart-value').textContent(), /\d+ ms/);
  assert.match(await page.locator('.chart:has-text("Server throughput") .chart-value').textContent(), /tok\/s/);
  // No GPU telemetry on this machine, or a GPU section: either way no crash.
  assert.deepEqual(browser.errors, []);
});
