// Takes the web UI screenshots in docs/images/ against a real tandem-server
// on the demo model (every reply in them is the model's own output):
//   TANDEM_SERVER_BIN=build/bin/tandem-server TANDEM_DEMO_MODEL=models/demo/demo-q8_0.gguf \
//   TANDEM_WEB_DIR=web node tests/browser/screenshots.mjs
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launchBrowser } from './harness.mjs';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/images');
const server = await startServer({ ctx: 512, batch: 4 });
const browser = await launchBrowser({ width: 1280, height: 800 });
const { page } = browser;

const finishedReplies = () => page.evaluate(() => Number(document.querySelector('.chat-view').dataset.replies ?? 0));

async function reply(text) {
  const mark = await finishedReplies();
  await page.fill('.composer-input', text);
  await page.press('.composer-input', 'Enter');
  await page.waitForFunction((m) => Number(document.querySelector('.chat-view').dataset.replies ?? 0) > m, mark, { timeout: 60000 });
}

// Background traffic over the OpenAI API so the dashboard has something to show.
let loadRunning = true;
async function loadWorker(k) {
  while (loadRunning) {
    await fetch(server.base + '/v1/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: ['And it came to pass', 'In the beginning', 'Blessed are', 'A fortune:'][k % 4], max_tokens: 120 + 40 * k, temperature: 0.9 }),
    }).then((r) => r.text()).catch(() => {});
    await new Promise((r) => setTimeout(r, 300 + 200 * k));
  }
}

try {
  await page.addInitScript(() => {
    if (!localStorage.getItem('tandem.settings')) localStorage.setItem('tandem.settings', JSON.stringify({ temperature: 0.8, seed: 11, max_tokens: 120 }));
  });
  await page.goto(server.base + '/');
  await page.waitForSelector('.conn[data-state="connected"]');

  // Two earlier conversations for the list, then the one on screen.
  await reply('Tell me a fortune');
  await page.click('.new-chat');
  await reply('What did the prophet say?');
  await page.click('.new-chat');
  await reply('Tell me a fortune about computers');
  await reply('And one about the sea, please');
  await page.mouse.move(900, 780);
  await page.screenshot({ path: path.join(OUT, 'webui-chat.png') });

  await page.goto(server.base + '/#completion');
  await page.fill('.completion-prompt', 'And God said');
  await page.click('.completion-main button.primary');
  await page.waitForSelector('.completion-view .meta:has-text("tokens")', { timeout: 60000 });
  await page.screenshot({ path: path.join(OUT, 'webui-completion.png') });

  const workers = [0, 1, 2, 3, 4, 5].map(loadWorker);
  await page.goto(server.base + '/#dashboard');
  for (let k = 0; k < 12; k++) {
    // Requests from this page feed the per-request TTFT and decode charts.
    await page.goto(server.base + '/#completion');
    await page.click('.completion-main button.primary');
    await page.waitForSelector('.completion-view .meta:has-text("tokens")', { timeout: 60000 });
    await page.goto(server.base + '/#dashboard');
    await page.waitForTimeout(1500);
  }
  await page.screenshot({ path: path.join(OUT, 'webui-dashboard.png') });
  loadRunning = false;
  await Promise.all(workers);

  await page.setViewportSize({ width: 390, height: 780 });
  await page.goto(server.base + '/#chat');
  await page.waitForSelector('.message.assistant');
  await page.screenshot({ path: path.join(OUT, 'webui-phone.png') });
  if (browser.errors.length) throw new Error(browser.errors.join('\n'));
  console.log(`screenshots written to ${OUT}`);
} finally {
  loadRunning = false;
  await browser.close();
  await server.stop();
}
