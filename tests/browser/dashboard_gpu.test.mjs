// The dashboard's GPU section, fed by the fake NVML library of
// tests/telemetry (two boards: an H100 with power readings, an L4 without).
// Without GPU readings the section stays hidden (chat.test.mjs checks that).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, eventually } from './harness.mjs';

const FAKE = process.env.TANDEM_FAKE_NVML;
const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

test('GPU memory, utilization, temperature and power are charted when the server reports them', { skip: !FAKE && 'no fake NVML library' }, async () => {
  process.env.TANDEM_NVML_LIBRARY = FAKE;
  const server = await startServer();
  delete process.env.TANDEM_NVML_LIBRARY;
  cleanup.push(() => server.stop());
  const browser = await launchBrowser();
  cleanup.push(() => browser.close());
  const { page } = browser;
  await page.goto(server.base + '/#dashboard');
  await page.waitForSelector('.gpu-box:not([hidden]) .gpu', { timeout: 15000 });
  await eventually(async () => (await page.locator('.gpu').count()) === 2, 5000, 'two GPU sections');
  const first = page.locator('.gpu').nth(0);
  const second = page.locator('.gpu').nth(1);
  assert.match(await first.locator('h3').textContent(), /GPU 0: Fake H100 80GB HBM3 · 30 GiB \/ 80 GiB/);
  assert.match(await first.locator('.chart:has-text("Temperature") .chart-value').textContent(), /^61 °C$/);
  assert.match(await first.locator('.chart:has-text("Power") .chart-value').textContent(), /^313 W$|^312 W$/);
  assert.match(await first.locator('.chart:has-text("Memory") .chart-value').textContent(), /37\.5 % \/ 87\.0 %/);
  assert.match(await second.locator('h3').textContent(), /GPU 1: Fake L4/);
  assert.ok(!(await second.locator('.chart:has-text("Power")').isVisible()), 'a board without power readings shows no power chart');
  assert.deepEqual(browser.errors, []);
});
