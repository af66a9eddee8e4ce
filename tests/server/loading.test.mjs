// The loading state: the server listens before the model is loaded; /health
// answers 503 "loading" with the bytes done so far, /v1/status says
// state "loading", generation is refused with 503 `loading`, then all turns
// to ok. TANDEM_TEST_LOAD_BYTES_PER_S slows the weight load down so that a
// small model takes long enough to watch; TANDEM_NVML_LIBRARY points at the
// fake NVML, so GPU fields show up on this machine without a GPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { API_KEY, authHeaders, eventually, require } from './harness.mjs';

const BIN = process.env.TANDEM_SERVER_BIN;
const MODEL = process.env.TANDEM_DEMO_MODEL;
const FAKE_NVML = process.env.TANDEM_FAKE_NVML;
const WebSocket = require('ws');

// Starts a server whose weights load at `rate` bytes/s; resolves with its
// port as soon as it listens (logged on stderr), long before it is ready.
async function startLoading(rate) {
  const proc = spawn(BIN, ['serve', '--model', MODEL, '--port', '0', '--api-key', API_KEY, '--threads', '1',
    '--ctx', '256', '--log-level', 'info'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TANDEM_TEST_LOAD_BYTES_PER_S: String(rate), TANDEM_NVML_LIBRARY: FAKE_NVML },
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => { stdout += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no listening line in 20 s: ' + stderr)), 20000);
    proc.stderr.on('data', (d) => {
      stderr += d;
      const m = stderr.match(/listening on 127\.0\.0\.1:(\d+); loading/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${stderr}`)); });
  });
  return { proc, port, base: `http://127.0.0.1:${port}`, exited, stdout: () => stdout, stderr: () => stderr };
}

async function health(base) {
  const r = await fetch(base + '/health');
  return { status: r.status, body: await r.json() };
}

test('/health reports loading with progress, then ok', async () => {
  const total = fs.statSync(MODEL).size;
  const server = await startLoading(Math.round(total / 4));  // about 4 s of loading
  try {
    const { base } = server;
    // Progress while loading: 503, bytes_total known, bytes_done rising.
    const seen = [];
    const first = await eventually(async () => {
      const h = await health(base);
      return h.status === 503 && h.body.progress.bytes_total > 0 ? h : null;
    }, 10000, 'a loading answer with bytes_total');
    assert.equal(first.body.status, 'loading');
    const bytesTotal = first.body.progress.bytes_total;
    assert.ok(bytesTotal > total * 0.9 && bytesTotal <= total, `bytes_total ${bytesTotal} vs file ${total}`);
    await eventually(async () => {
      const h = await health(base);
      if (h.status !== 503) return true;
      assert.equal(h.body.progress.bytes_total, bytesTotal);
      seen.push(h.body.progress.bytes_done);
      return new Set(seen.filter((b) => b > 0 && b < bytesTotal)).size >= 2;
    }, 10000, 'two different partial progress values');
    for (let i = 1; i < seen.length; ++i) assert.ok(seen[i] >= seen[i - 1], `progress went back: ${seen}`);

    // /v1/status answers while loading (with the key), GPUs from the fake NVML.
    const s = await fetch(base + '/v1/status', { headers: authHeaders() });
    assert.equal(s.status, 200);
    const status = await s.json();
    assert.equal(status.state, 'loading');
    assert.equal(status.progress.bytes_total, bytesTotal);
    assert.equal(status.gpus.length, 2);
    assert.equal(status.gpus[0].name, 'Fake H100 80GB HBM3');
    assert.equal((await fetch(base + '/v1/status')).status, 401);  // the key still applies

    // Generation waits for the model: 503 `loading`, OpenAI-shaped.
    const gen = await fetch(base + '/v1/completions', { method: 'POST', headers: authHeaders(),
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 2 }) });
    assert.equal(gen.status, 503);
    const err = (await gen.json()).error;
    assert.equal(err.code, 'loading');
    assert.equal(err.type, 'service_unavailable_error');

    // WebSocket: init is refused with code `loading`.
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    const reply = new Promise((resolve) => ws.once('message', (m) => resolve(JSON.parse(m.toString()))));
    ws.send(JSON.stringify({ command: 'init', api_key: API_KEY }));
    const e = await reply;
    assert.equal(e.event, 'error');
    assert.equal(e.code, 'loading');
    ws.close();

    // Then ready: the ready line, /health ok, status ok with the model.
    await eventually(() => /listening on http:\/\/127\.0\.0\.1:\d+ model=/.test(server.stdout()), 20000, 'the ready line');
    const ok = await health(base);
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { status: 'ok' });
    const after = await (await fetch(base + '/v1/status', { headers: authHeaders() })).json();
    assert.equal(after.state, 'ok');
    assert.equal(after.model.id, 'demo-q8_0');
    assert.equal(after.gpus.length, 2);
    // The WebSocket status event carries the same gpus array.
    const ws2 = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    await new Promise((resolve, reject) => { ws2.once('open', resolve); ws2.once('error', reject); });
    const events = [];
    const gotStatus = new Promise((resolve) => ws2.on('message', (m) => {
      const ev = JSON.parse(m.toString());
      events.push(ev);
      if (ev.event === 'status') resolve(ev);
    }));
    ws2.send(JSON.stringify({ command: 'init', api_key: API_KEY }));
    ws2.send(JSON.stringify({ command: 'status' }));
    const wsStatus = await gotStatus;
    assert.equal(events[0].event, 'ready');
    assert.equal(wsStatus.state, 'ok');
    assert.deepEqual(wsStatus.gpus.map((g) => g.name), ['Fake H100 80GB HBM3', 'Fake L4']);
    assert.equal(wsStatus.gpus[1].power_w, null);
    ws2.close();
    const metrics = await (await fetch(base + '/metrics', { headers: authHeaders() })).text();
    assert.match(metrics, /^tandem_loading 0$/m);
    assert.match(metrics, new RegExp(`^tandem_load_bytes_done ${bytesTotal}$`, 'm'));
    assert.match(metrics, /^tandem_gpu_memory_used_bytes\{gpu="0"\} 32212254720$/m);
    assert.match(server.stderr(), /GPU telemetry: 2 GPU\(s\) through NVML/);
  } finally {
    server.proc.kill('SIGTERM');
    assert.equal((await server.exited).code, 0);
  }
});

test('a signal while the weights load exits 130 at once, without the ready line', async () => {
  const total = fs.statSync(MODEL).size;
  const server = await startLoading(Math.round(total / 30));  // 30 s if left alone
  await eventually(async () => (await health(server.base)).body.progress?.bytes_done > 0, 10000, 'loading under way');
  const t0 = Date.now();
  server.proc.kill('SIGINT');
  const { code } = await server.exited;
  assert.equal(code, 130);
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms to stop`);
  assert.doesNotMatch(server.stdout(), /listening on http/);
});

test('without NVML the server runs and says why once', async () => {
  const proc = spawn(BIN, ['serve', '--model', MODEL, '--port', '0', '--threads', '1', '--ctx', '256', '--log-level', 'info'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TANDEM_NVML_LIBRARY: '/nonexistent/libnvidia-ml.so.1' },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; const m = out.match(/127\.0\.0\.1:(\d+) model=/); if (m) resolve(m[1]); });
    proc.on('exit', (c) => reject(new Error('exited ' + c + ': ' + stderr)));
  });
  const base = `http://127.0.0.1:${port}`;
  const status = await (await fetch(base + '/v1/status')).json();
  assert.equal(status.state, 'ok');
  assert.equal(status.gpus, undefined);
  const metrics = await (await fetch(base + '/metrics')).text();
  assert.doesNotMatch(metrics, /tandem_gpu/);
  await fetch(base + '/metrics');
  proc.kill('SIGTERM');
  assert.equal(await exited, 0);
  const reasons = stderr.match(/GPU telemetry unavailable: cannot load \/nonexistent\/libnvidia-ml\.so\.1/g) ?? [];
  assert.equal(reasons.length, 1, stderr);
});
