// Browser end-to-end harness: a real tandem-server on the demo model and
// Debian's chromium driven by playwright-core (from web/node_modules).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const BIN = process.env.TANDEM_SERVER_BIN;
const MODEL = process.env.TANDEM_DEMO_MODEL;
const WEB_DIR = process.env.TANDEM_WEB_DIR;
export const CHROMIUM = process.env.TANDEM_CHROMIUM ?? '/usr/bin/chromium';
if (!BIN || !MODEL || !WEB_DIR) throw new Error('set TANDEM_SERVER_BIN, TANDEM_DEMO_MODEL, TANDEM_WEB_DIR (ctest does)');

if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/install-deps.sh (apt install chromium) or set TANDEM_CHROMIUM`);
if (!fs.existsSync(path.resolve(WEB_DIR, 'node_modules', 'playwright-core'))) throw new Error(`${WEB_DIR}/node_modules lacks playwright-core: run scripts/install-deps.sh (npm ci in web/)`);

const require = createRequire(path.resolve(WEB_DIR, 'package.json'));
const { chromium } = require('playwright-core');

// A port nobody listens on right now; the server keeps it across restarts.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Starts `tandem-server serve --threads 1` on `port`; resolves once it listens.
// stepDelayMs: every engine step waits that long (TANDEM_TEST_STEP_DELAY_MS),
// so that a reply lasts long enough to stop mid-stream.
// Without `port` the server picks a free one itself (--port 0), so that no
// other process can take it between the choice and the bind.
export async function startServer({ port, ctx = 512, batch = 4, extra = [], stepDelayMs = 0 } = {}) {
  const args = ['serve', '--model', MODEL, '--port', String(port ?? 0), '--threads', '1', '--ctx', String(ctx),
    '--batch-size', String(batch), '--log-level', process.env.TANDEM_TEST_VERBOSE ? 'debug' : 'warn', ...extra];
  const env = { ...process.env, TANDEM_TEST_STEP_DELAY_MS: String(stepDelayMs) };
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('server did not start in 60 s: ' + stderr)), 60000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}: ${stderr}`)); });
  });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    // A crash: SIGKILL, no drain.
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      return exited;
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 10000);
      const r = await exited;
      clearTimeout(killer);
      return r;
    },
  };
}

// A fresh Chromium profile per call (IndexedDB survives reloads within it).
export async function launchBrowser({ width = 1280, height = 800 } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-browser-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width, height },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  return {
    context,
    page,
    errors,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

// Polls until f() is truthy (or throws after `ms`).
export async function eventually(f, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
