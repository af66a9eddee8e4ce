// Starts a real tandem-server on 127.0.0.1 (a free port) for the node tests,
// and loads the npm clients from tests/reference/node_modules.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import net from 'node:net';

const BIN = process.env.TANDEM_SERVER_BIN;
const MODEL = process.env.TANDEM_DEMO_MODEL;
const MODULES = process.env.TANDEM_NODE_MODULES;
if (!BIN || !MODEL || !MODULES) throw new Error('set TANDEM_SERVER_BIN, TANDEM_DEMO_MODEL, TANDEM_NODE_MODULES (ctest does)');

export const require = createRequire(path.join(MODULES, 'x.js'));
export const API_KEY = 'test-key-123';

// Options: batch, queue, ctx, extra args; stepDelayMs makes every engine
// step wait that long (TANDEM_TEST_STEP_DELAY_MS), for tests that act on a
// reply mid-stream: the demo model writes a whole reply in a fraction of a
// second otherwise. Resolves once the server prints its listening line;
// rejects after 60 s or if it exits first.
export async function startServer({ batch = 4, queue = 16, ctx = 512, extra = [], stepDelayMs = 0 } = {}) {
  const args = ['serve', '--model', MODEL, '--port', '0', '--api-key', API_KEY, '--batch-size', String(batch),
    '--max-queued-requests', String(queue), '--ctx', String(ctx), '--threads', process.env.TANDEM_TEST_THREADS ?? '2', '--header-timeout-s', '2',
    '--log-level', process.env.TANDEM_TEST_VERBOSE ? 'debug' : 'warn', ...extra];
  const env = { ...process.env, TANDEM_TEST_STEP_DELAY_MS: String(stepDelayMs) };
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
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
  const base = `http://127.0.0.1:${port}`;
  return {
    port, base, proc, exited,
    stderr: () => stderr,
    // SIGTERM, then the exit status (bounded: SIGKILL after 20 s).
    async stop() {
      if (proc.exitCode !== null) return exited;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 20000);
      const r = await exited;
      clearTimeout(killer);
      if (process.env.TANDEM_TEST_VERBOSE) console.error(stderr);
      return r;
    },
  };
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json', ...extra };
}

export async function postJson(base, route, body, headers = authHeaders()) {
  const res = await fetch(base + route, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

export async function getText(base, route) {
  const res = await fetch(base + route, { headers: authHeaders() });
  return { status: res.status, text: await res.text() };
}

// One Prometheus sample value (first match of `name{labels}`).
export function metric(text, name, labels = '') {
  const key = labels ? `${name}{${labels}}` : name;
  for (const line of text.split('\n')) {
    if (line.startsWith(key + ' ')) return Number(line.slice(key.length + 1));
  }
  return NaN;
}

// Polls until f() is truthy (or throws after `ms`).
export async function eventually(f, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Raw TCP: write `chunks` (strings or Buffers) with `gapMs` between them and
// collect what comes back until the server closes or `timeoutMs` passes.
export function rawExchange(port, chunks, { gapMs = 0, timeoutMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    let closed = false;
    const started = Date.now();
    const done = (why) => { if (closed) return; closed = true; sock.destroy(); resolve({ data, why, ms: Date.now() - started }); };
    sock.on('data', (d) => { data += d.toString('latin1'); });
    sock.on('close', () => done('closed'));
    sock.on('error', () => done('error'));
    setTimeout(() => done('timeout'), timeoutMs);
    (async () => {
      for (const c of chunks) {
        if (closed) return;
        sock.write(c);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
  });
}
