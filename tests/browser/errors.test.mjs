// What the user sees when the back end refuses or disappears: a prompt over
// the context window, a server that needs an API key, and a restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, eventually, freePort } from './harness.mjs';

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function open(server) {
  const browser = await launchBrowser();
  cleanup.push(() => browser.close());
  await browser.page.goto(server.base + '/');
  return browser;
}

test('an over-long prompt shows a readable context error, not JSON', async () => {
  const server = await startServer({ ctx: 64 });
  cleanup.push(() => server.stop());
  const { page, errors } = await open(server);
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
  const long = Array.from({ length: 80 }, (_, i) => `word${i}`).join(' ');
  await page.fill('.composer-input', long);
  await page.press('.composer-input', 'Enter');
  const card = page.locator('.message.assistant .error-card');
  await card.waitFor({ timeout: 10000 });
  assert.equal(await card.getAttribute('data-code'), 'context_length_exceeded');
  const text = await card.textContent();
  assert.match(text, /too long for the model's context window/);
  assert.match(text, /context window is 64/, 'the server\'s own numbers are shown too');
  assert.doesNotMatch(text, /[{}"]/, 'no raw JSON');
  // The socket stays usable after the error.
  assert.equal(await page.locator('.conn').getAttribute('data-state'), 'connected');
  assert.deepEqual(errors, []);
});

test('a full queue shows the readable overloaded message', async () => {
  const server = await startServer({ batch: 1, extra: ['--max-queued-requests', '1'] });
  cleanup.push(() => server.stop());
  const { page } = await open(server);
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
  // Clients elsewhere keep the one batch slot and the one queue slot taken
  // (the demo model is fast, so they ask again as soon as they are turned away).
  let hammering = true;
  const hammer = async () => {
    while (hammering) {
      const res = await fetch(server.base + '/v1/completions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'And the LORD said unto Moses', max_tokens: 500, ignore_eos: true }),
      });
      await res.text();
      if (res.status === 429) await new Promise((r) => setTimeout(r, 5));
    }
  };
  const workers = [0, 1, 2, 3].map(hammer);
  const replies = () => page.evaluate(() => Number(document.querySelector('.chat-view').dataset.replies ?? 0));
  let code = null;
  try {
    // A send can slip into a slot that just freed; then it simply succeeds. Try again.
    for (let attempt = 0; attempt < 10 && code !== 'overloaded'; attempt++) {
      const mark = await replies();
      await page.fill('.composer-input', 'Tell me a fortune');
      await page.press('.composer-input', 'Enter');
      await page.waitForFunction((m) => Number(document.querySelector('.chat-view').dataset.replies ?? 0) > m, mark, { timeout: 30000 });
      const card = page.locator('.message.assistant').last().locator('.error-card');
      code = (await card.count()) ? await card.getAttribute('data-code') : null;
    }
  } finally {
    hammering = false;
    await Promise.all(workers);
  }
  assert.equal(code, 'overloaded');
  const text = await page.locator('.message.assistant').last().locator('.error-card').textContent();
  assert.match(text, /The server is busy: its request queue is full\. Try again in a moment\./);
  assert.doesNotMatch(text, /[{}"]/, 'no raw JSON');
});

test('while the model loads, the badge shows its progress, then the UI connects', async () => {
  const browser = await launchBrowser();
  cleanup.push(() => browser.close());
  const port = await freePort();
  // Reading the 13 MB demo model at 1.5 MB/s takes about 9 s.
  process.env.TANDEM_TEST_LOAD_BYTES_PER_S = '1500000';
  const starting = startServer({ port });
  delete process.env.TANDEM_TEST_LOAD_BYTES_PER_S;
  cleanup.push(async () => (await starting.catch(() => null))?.stop());
  const base = `http://127.0.0.1:${port}`;
  await eventually(async () => (await fetch(base + '/health').catch(() => null))?.status === 503, 10000, 'the server to answer while loading');
  await browser.page.goto(base + '/');
  const seen = [];
  await eventually(async () => {
    const text = await browser.page.locator('.conn').textContent();
    if (seen[seen.length - 1] !== text) seen.push(text);
    return /^model loading \d+%$/.test(text);
  }, 5000, 'the loading badge').catch((e) => {
    throw new Error(`${e.message}; the badge showed ${JSON.stringify(seen)}`);
  });
  await starting;
  await browser.page.waitForSelector('.conn[data-state="connected"]', { timeout: 10000 });
});

test('a server with an API key: the page loads without it, the UI asks for it, then connects', async () => {
  const server = await startServer({ extra: ['--api-key', 'browser-key-1'] });
  cleanup.push(() => server.stop());

  // The page and its assets are public (with content types and cache
  // headers); the API behind them still wants the key.
  const root = await fetch(server.base + '/');
  assert.equal(root.status, 200);
  assert.equal(root.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal(root.headers.get('cache-control'), 'no-cache');
  const html = await root.text();
  const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
  const style = /href="(\/assets\/[^"]+\.css)"/.exec(html)?.[1];
  assert.ok(script && style, 'index.html links its hashed script and style');
  for (const [asset, type] of [[script, 'text/javascript; charset=utf-8'], [style, 'text/css; charset=utf-8']]) {
    const res = await fetch(server.base + asset);
    assert.equal(res.status, 200, asset);
    assert.equal(res.headers.get('content-type'), type);
    assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.ok((await res.arrayBuffer()).byteLength > 1000);
  }
  const head = await fetch(server.base + '/index.html', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers.get('content-length')), Buffer.byteLength(html));
  assert.equal((await fetch(server.base + '/health')).status, 200);
  assert.equal((await fetch(server.base + '/v1/models')).status, 401);
  const auth = { headers: { Authorization: 'Bearer browser-key-1' } };
  assert.equal((await fetch(server.base + '/v1/models', auth)).status, 200);
  assert.equal((await fetch(server.base + '/no-such-page', auth)).status, 404);

  const { page } = await open(server);
  await page.waitForSelector('.conn[data-state="needs_key"]', { timeout: 15000 });
  const form = page.locator('form.key-prompt');
  assert.ok(await form.isVisible());
  await form.locator('input').fill('wrong-key');
  await form.locator('button').click();
  await page.waitForSelector('.key-prompt:has-text("refused")', { timeout: 5000 });
  await form.locator('input').fill('browser-key-1');
  await form.locator('button').click();
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 5000 });
  assert.ok(!(await form.isVisible()));
});

test('a back-end crash mid-reply shows disconnected, and a restart reconnects by itself', async () => {
  const port = await freePort();
  let server = await startServer({ port });
  cleanup.push(() => server.stop());
  const browser = await launchBrowser();
  cleanup.push(() => browser.close());
  const { page } = browser;
  // Greedy decoding: this first message gets a reply as long as the context.
  await page.addInitScript(() => localStorage.setItem('tandem.settings', JSON.stringify({ temperature: 0, top_k: 0, top_p: 1, min_p: 0, repetition_penalty: 1 })));
  // The socket passes through the test. Once the reply's first 10
  // characters have gone to the page, the server's later messages are held
  // back and the server is killed: the crash lands mid-reply however fast
  // the model writes the whole reply (the demo model's 500 tokens take a
  // fraction of a second, less than a loaded machine may need to react).
  let crashed = false;
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => upstream.send(m));
    let text = '';
    let holding = false;
    upstream.onMessage((m) => {
      if (holding) return;
      ws.send(m);
      if (crashed) return;
      let msg;
      try { msg = JSON.parse(m); } catch { return; }
      if (msg.event !== 'token') return;
      text += msg.text;
      if (text.length >= 10) {
        holding = true;
        crashed = true;
        server.kill();
      }
    });
  });
  await page.goto(server.base + '/');
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
  await page.fill('.composer-input', 'Tell me about the beginning of the world');
  await page.press('.composer-input', 'Enter');
  const card = page.locator('.message.assistant .error-card');
  await card.waitFor({ timeout: 15000 });
  assert.ok(crashed, 'the server was killed mid-reply');
  assert.equal(await card.getAttribute('data-code'), 'disconnected');
  assert.match(await card.textContent(), /connection to the server was lost before the answer finished/);
  assert.ok((await page.locator('.message.assistant .content').textContent()).length >= 10, 'what arrived stays');
  await page.waitForSelector('.conn[data-state="disconnected"]', { timeout: 10000 });
  assert.match(await page.locator('.conn').textContent(), /disconnected/);
  assert.ok(await page.locator('.composer .send').isDisabled(), 'Send is off while disconnected');

  server = await startServer({ port });
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 20000 });
  // And it works again, in the same conversation.
  await page.fill('.composer-input', 'Tell me a fortune');
  await page.press('.composer-input', 'Enter');
  await page.waitForFunction(() => {
    const replies = document.querySelectorAll('.message.assistant');
    return replies.length === 2 && !replies[1].classList.contains('streaming') && /tokens/.test(replies[1].querySelector('.meta').textContent);
  }, null, { timeout: 30000 });
});
