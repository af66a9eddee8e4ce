// The real web UI in Chromium, served by `tandem ui` and bridged to two live
// backends: chat streams a reply and the dashboard shows the pooled status.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startServer, launchBrowser, eventually } from '../browser/harness.mjs';

const TANDEM = process.env.TANDEM_BIN;
if (!TANDEM) throw new Error('set TANDEM_BIN (ctest does)');

let backends = [];
let ui;
let uiExited;
let base;
let browser;
let page;

before(async () => {
  backends = [await startServer(), await startServer()];
  ui = spawn(TANDEM, ['ui', ...backends.flatMap((b) => ['--backend', String(b.port)]), '--port', '0', '--poll-interval', '0.3'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  uiExited = new Promise((resolve) => ui.on('exit', (code) => resolve(code)));
  let out = '';
  ui.stdout.on('data', (d) => { out += d; });
  const port = await eventually(() => out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)?.[1], 20000, 'the ui to listen');
  base = `http://127.0.0.1:${port}`;
  await eventually(async () => (await (await fetch(`${base}/v1/status`)).json()).bridge.backends_up === 2, 20000, 'both backends up');
  browser = await launchBrowser();
  page = browser.page;
  await page.addInitScript(() => {
    if (!localStorage.getItem('tandem.settings')) localStorage.setItem('tandem.settings', JSON.stringify({ temperature: 0, max_tokens: 24 }));
  });
  await page.goto(base + '/');
  await page.waitForSelector('.conn[data-state="connected"]', { timeout: 15000 });
});

after(async () => {
  await browser?.close();
  ui?.kill('SIGTERM');
  if (ui) assert.equal(await uiExited, 0);
  for (const b of backends) await b.stop();
});

test('a chat message streams a reply through the bridge', async () => {
  await page.fill('.composer-input', 'Tell me a fortune');
  await page.press('.composer-input', 'Enter');
  await page.waitForFunction(() => Number(document.querySelector('.chat-view').dataset.replies ?? 0) > 0, null, { timeout: 30000 });
  const reply = page.locator('.message.assistant').last();
  assert.ok(((await reply.locator('.content').textContent()) ?? '').trim().length > 0, 'the reply has text');
  assert.match(await reply.locator('.meta').textContent(), /TTFT \d+ ms/);
  assert.deepEqual(browser.errors, []);
});

test('the dashboard shows the pooled backends', async () => {
  await page.goto(base + '/#dashboard');
  await eventually(async () => /demo-q8_0/.test(await page.locator('.cards').textContent()), 10000, 'the model card');
  const generated = async () => Number((await page.locator('.card[data-card="tokens"] .card-value').textContent()).replace(/,/g, ''));
  await eventually(async () => (await generated()) > 0, 10000, 'the generated tokens of the chat');
  assert.deepEqual(browser.errors, []);
});
