// The chat and completion views against a real tandem-server: streaming,
// stop, persistence across a reload, the dashboard, and a readable error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
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
  // Steps of at least 4 ms: a reply lasts long enough for Stop to land
  // mid-stream, and for the page to draw it in pieces, however loaded the
  // machine (the demo model writes ~490 tokens in a fraction of a second).
  server = await startServer({ ctx: 512, stepDelayMs: 4 });
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

// The chat view counts finished replies (data-replies); markOld notes the
// count and waitForReply waits for it to grow, then checks the last reply.
let replyMark = 0;
const finishedReplies = () => page.evaluate(() => Number(document.querySelector('.chat-view').dataset.replies ?? 0));

async function markOld() {
  replyMark = await finishedReplies();
}

async function waitForReply(metaText = 'tokens') {
  await page.waitForFunction((mark) => Number(document.querySelector('.chat-view').dataset.replies ?? 0) > mark, replyMark, { timeout: 30000 });
  assert.match(await page.locator('.message.assistant').last().locator('.meta').textContent(), new RegExp(metaText));
}

async function send(text) {
  await markOld();
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
  await setMaxTokens('300');
  assert.equal(JSON.parse(await page.evaluate(() => localStorage.getItem('tandem.settings'))).max_tokens, 300);
  await watchStreaming();
  await send(LONG_PROMPT);
  await waitForReply();
  // Part of the reply was on screen before all of it was.
  const lengths = await page.evaluate(() => window.__lengths);
  const { text, meta } = await lastAssistant();
  const partial = lengths.filter((n) => n > 0 && n < text.length);
  assert.ok(partial.length >= 1, `the reply should arrive in pieces, saw lengths ${JSON.stringify(lengths.slice(0, 40))} of ${text.length}`);
  assert.ok(text.trim().length > 0, 'the reply has text');
  assert.match(meta, /^300 tokens/, 'max_tokens from Settings reached the server');
  assert.match(meta, /hit max tokens/);
  assert.match(meta, /TTFT \d+ ms/);
  assert.equal(await page.locator('.message.user .content').first().textContent(), LONG_PROMPT);
  assert.match(await page.locator('.conv.active .conv-title').textContent(), /Tell me about the beginning/);
  await setMaxTokens('');
});

// The page itself presses Stop (a real click on the button) as soon as
// `minChars` of the reply are on screen, with no round trip from this script.
async function pressStopAfter(textSelector, buttonSelector, minChars) {
  await page.evaluate(({ textSelector, buttonSelector, minChars }) => {
    const observer = new MutationObserver(() => {
      const el = document.querySelector(textSelector);
      const stop = document.querySelector(buttonSelector); // present only while generating
      if (el && stop && el.textContent.length >= minChars) {
        observer.disconnect();
        stop.click();
      }
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true });
  }, { textSelector, buttonSelector, minChars });
}

test('Stop ends a reply mid-stream and keeps what arrived', async () => {
  await page.click('.new-chat');
  await pressStopAfter('.message.assistant.streaming .content', '.composer .send.stop', 20);
  await send(LONG_PROMPT);
  await waitForReply('stopped');
  const { text, meta } = await lastAssistant();
  const tokens = Number(/(\d+) tokens/.exec(meta)[1]);
  assert.ok(tokens > 0 && tokens < 300, `stopped early, after ${tokens} tokens (the context allows ~490)`);
  assert.ok(text.length > 20, 'the partial reply stays');
  assert.equal(await page.locator('.composer .send').textContent(), 'Send');
});

test('regenerate replaces the last reply; edit and resend truncates the conversation', async () => {
  const before = await page.locator('.message').count();
  await pressStopAfter('.message.assistant.streaming .content', '.composer .send.stop', 20); // the greedy reply is long
  await markOld();
  await page.locator('.message.assistant').last().getByRole('button', { name: 'Regenerate' }).click();
  await waitForReply('stopped');
  assert.equal(await page.locator('.message').count(), before, 'regenerate replaces, it does not append');

  await page.locator('.message.user').first().getByRole('button', { name: 'Edit' }).click();
  await page.fill('.edit-input', SHORT_PROMPT + ' please');
  await markOld();
  await page.getByRole('button', { name: 'Save & send' }).click();
  await waitForReply();
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
  // Export writes the conversation as JSON.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('.conv.active').getByRole('button', { name: 'Export' }).click(),
  ]);
  assert.match(download.suggestedFilename(), /\.json$/);
  const exported = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  assert.equal(exported.format, 'tandem-conversation');
  assert.equal(exported.title, title);
  assert.deepEqual(exported.messages.map((m) => m.role), ['user', 'assistant']);
  assert.equal(exported.messages[0].content, SHORT_PROMPT + ' please');
  assert.equal(exported.messages[1].content, text);

  // A new conversation joins the list; renaming and deleting work.
  const listed = await page.locator('.conv').count();
  await page.click('.new-chat');
  await send(SHORT_PROMPT);
  await waitForReply();
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

test('the system prompt is sent with the conversation and kept with it', async () => {
  const system = 'You answer with one short line.';
  await page.click('.new-chat');
  await page.getByRole('button', { name: 'System prompt' }).click();
  await page.fill('.system-prompt', system);
  await send(SHORT_PROMPT);
  await waitForReply();
  // The server counted exactly the tokens of [system, user] under the chat template.
  const tokenized = await (await fetch(server.base + '/tokenize', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'system', content: system }, { role: 'user', content: SHORT_PROMPT }] }),
  })).json();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('.conv.active').getByRole('button', { name: 'Export' }).click(),
  ]);
  const exported = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  assert.equal(exported.system, system);
  assert.equal(exported.messages[1].stats.prompt_tokens, tokenized.count);
  await page.reload();
  await page.waitForSelector('.message.assistant', { timeout: 10000 });
  assert.equal(await page.inputValue('.system-prompt'), system);
  assert.ok(await page.locator('.system-box').isVisible(), 'a conversation with a system prompt shows it');
});

test('Markdown renders safely: formatting and code highlighting, no injected markup', async () => {
  // A stored reply full of hostile and ordinary Markdown, as a model might write it.
  const hostile = [
    '# Title with <b>tags</b>',
    '**bold** and *em* and `<img src=x onerror="window.__pwned=1">` inline',
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>',
    '[click](javascript:window.__pwned=1) and [ok](https://example.com)',
    '```python',
    'def f(x):  # comment',
    '    return "<b>" + str(42)',
    '```',
    '- one',
    '- two',
  ].join('\n');
  await page.evaluate(async (content) => {
    const db = await new Promise((resolve, reject) => {
      const r = indexedDB.open('tandem', 1);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    await new Promise((resolve, reject) => {
      const tx = db.transaction('conversations', 'readwrite');
      const now = Date.now();
      tx.objectStore('conversations').put({ id: 'md-test', title: 'Markdown test', created: now, updated: now + 1e6, system: '',
        messages: [{ role: 'user', content: '<i>user text is text</i>' }, { role: 'assistant', content }] });
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    localStorage.setItem('tandem.lastConversation', 'md-test');
  }, hostile);
  await page.reload();
  const reply = page.locator('.message.assistant .content');
  await reply.waitFor({ timeout: 10000 });
  assert.equal(await page.locator('.message.user .content').textContent(), '<i>user text is text</i>');
  assert.equal(await page.locator('.message.user .content i').count(), 0);
  assert.equal(await reply.locator('img, script, b, [onerror]').count(), 0, 'no element came from the text');
  assert.match(await reply.locator('h3').textContent(), /Title with <b>tags<\/b>/);
  assert.equal(await reply.locator('strong').textContent(), 'bold');
  assert.equal(await reply.locator('em').first().textContent(), 'em');
  assert.match(await reply.locator('p code').first().textContent(), /<img src=x/);
  assert.equal(await reply.locator('a').count(), 1, 'the javascript: link is dropped, its text kept');
  assert.equal(await reply.locator('a').getAttribute('href'), 'https://example.com');
  assert.equal(await reply.locator('.code-block .tok-keyword').first().textContent(), 'def');
  assert.equal(await reply.locator('.code-block .tok-comment').textContent(), '# comment');
  assert.equal(await reply.locator('.code-block .tok-string').textContent(), '"<b>"');
  assert.equal(await reply.locator('li').count(), 2);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
});

test('completion mode continues a prompt and can be stopped', async () => {
  await page.goto(server.base + '/#completion');
  await page.fill('.completion-prompt', 'In the beginning');
  await page.click('.completion-main button.primary');
  await page.waitForSelector('.completion-view .meta:has-text("tokens")', { timeout: 30000 });
  const out = await page.locator('.completion-output').textContent();
  assert.ok(out.startsWith('In the beginning') && out.length > 'In the beginning'.length, `output: ${out}`);

  await page.fill('.completion-prompt', LONG_COMPLETION);
  await pressStopAfter('.completion-output .generated', '.completion-main button.stop', 10);
  await page.click('.completion-main button.primary');
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

test('at phone width nothing overflows and the conversation list is a drawer', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  try {
    for (const tab of ['chat', 'completion', 'dashboard']) {
      await page.goto(`${server.base}/#${tab}`);
      await page.waitForTimeout(300);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `#${tab} is ${overflow}px wider than the screen`);
    }
    await page.goto(`${server.base}/#chat`);
    const sidebarX = async () => (await page.locator('.sidebar').boundingBox()).x;
    assert.ok((await sidebarX()) < 0, 'the list is off screen');
    await page.getByRole('button', { name: 'Conversations' }).click();
    await eventually(async () => (await sidebarX()) === 0, 3000, 'the drawer to open');
    await page.locator('.conv .conv-title').first().click();
    await eventually(async () => (await sidebarX()) < 0, 3000, 'the drawer to close after picking a conversation');
    assert.ok(await page.locator('.composer .send').isVisible());
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});
