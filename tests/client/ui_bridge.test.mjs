// `tandem ui` bridging two live backends, driven with the `ws` npm package as
// a browser would: id rewriting, least-loaded routing, sticky conversations,
// fail-over when a backend dies, the aggregate status.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, require, API_KEY, spawnTandem, waitFor } from './client_harness.mjs';

const WebSocket = require('ws');
const fzstd = require('fzstd');
let a, b, ui, base, wsUrl;

// Backends with steps of at least 5 ms: a 400-token answer lasts 2 s or
// more, so a cancel, a kill or a drain lands mid-answer however loaded the
// machine (the demo model writes it in a fraction of a second otherwise).
const PACED = { stepDelayMs: 5 };

before(async () => {
  [a, b] = [await startServer(PACED), await startServer(PACED)];
  ui = spawnTandem(['ui', '--backend', `ws://127.0.0.1:${a.port}`, '--backend', String(b.port), '--api-key', API_KEY,
    '--port', '0', '--poll-interval', '0.2']);
  const port = await waitFor(() => ui.out.stdout.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)?.[1], 20000, 'the ui to listen');
  base = `http://127.0.0.1:${port}`;
  wsUrl = `ws://127.0.0.1:${port}/ws`;
  await waitFor(async () => {
    const s = await (await fetch(`${base}/v1/status`)).json();
    return s.backends.every((x) => x.state === 'ok' && x.status);
  }, 20000, 'both backends linked and polled');
});

after(async () => {
  ui.proc.kill('SIGTERM');
  assert.equal((await ui.exited).code, 0, ui.out.stderr);
  for (const s of [a, b]) await s.stop();
});

// A browser: a socket with a queue; next(pred) takes the next matching message.
async function browser(compression = 'none') {
  const ws = new WebSocket(wsUrl);
  const queue = [];
  const waiters = [];
  let binary = 0;
  ws.on('message', (data, isBinary) => {
    if (isBinary) binary++;
    const text = isBinary ? new TextDecoder().decode(fzstd.decompress(new Uint8Array(data))) : data.toString();
    queue.push(JSON.parse(text));
    for (let i = 0; i < waiters.length; i++) {
      const idx = queue.findIndex(waiters[i].pred);
      if (idx >= 0) { const w = waiters.splice(i--, 1)[0]; w.resolve(queue.splice(idx, 1)[0]); }
    }
  });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const next = (pred = () => true, ms = 30000) => new Promise((resolve, reject) => {
    const idx = queue.findIndex(pred);
    if (idx >= 0) return resolve(queue.splice(idx, 1)[0]);
    const w = { pred, resolve };
    waiters.push(w);
    setTimeout(() => { const i = waiters.indexOf(w); if (i >= 0) { waiters.splice(i, 1); reject(new Error('no message in time')); } }, ms).unref();
  });
  const send = (obj) => ws.send(JSON.stringify(obj));
  send({ command: 'init', compression });
  const ready = await next((m) => m.event === 'ready' || m.event === 'error');
  return { ws, next, send, ready, binaryCount: () => binary };
}

async function collect(c, id) {
  let text = '';
  for (;;) {
    const m = await c.next((x) => x.id === id);
    if (m.event === 'token') text += m.text;
    else return { end: m, text };
  }
}

const P = { max_tokens: 8, temperature: 0 };

test('serves the web UI, /health and the aggregate /v1/status', async () => {
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  assert.equal((await fetch(`${base}/health`)).status, 200);
  const s = await (await fetch(`${base}/v1/status`)).json();
  assert.equal(s.state, 'ok');
  assert.equal(s.backends.length, 2);
  assert.deepEqual(s.backends.map((x) => x.url), [`ws://127.0.0.1:${a.port}/ws`, `ws://127.0.0.1:${b.port}/ws`]);
  assert.equal(s.model.id, 'demo-q8_0');
  assert.equal(s.batch.batch_size, 8, 'summed over both backends');
  assert.equal(s.kv_cache.blocks_total, s.backends[0].status.kv_cache.blocks_total + s.backends[1].status.kv_cache.blocks_total);
  assert.equal((await fetch(`${base}/nope`)).status, 404);
});

test('two browsers using the same ids do not collide; answers match a direct backend', async () => {
  const [x, y] = [await browser('zstd'), await browser()];
  assert.equal(x.ready.event, 'ready');
  assert.equal(x.ready.model, 'demo-q8_0');
  assert.equal(x.ready.compression, 'zstd');
  x.send({ command: 'generate', id: 'r1', prompt: 'In the beginning', params: P });
  y.send({ command: 'generate', id: 'r1', messages: [{ role: 'user', content: 'Tell me a fortune' }], params: P });
  const [rx, ry] = await Promise.all([collect(x, 'r1'), collect(y, 'r1')]);
  assert.equal(rx.end.event, 'done', JSON.stringify(rx.end));
  assert.equal(ry.end.event, 'done', JSON.stringify(ry.end));
  assert.equal(rx.end.usage.completion_tokens, 8);
  // Same request straight to a backend: same text (greedy).
  const direct = await fetch(`http://127.0.0.1:${a.port}/v1/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'demo-q8_0', prompt: 'In the beginning', max_tokens: 8, temperature: 0 }) });
  assert.equal((await direct.json()).choices[0].text, rx.text);
  // Large events (20 top logprobs a token) travel zstd-compressed both ways:
  // backend -> bridge on its link, bridge -> this browser, which asked for zstd.
  x.send({ command: 'generate', id: 'big', prompt: 'In the beginning', params: { max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 20 } });
  const big = [];
  for (;;) {
    const m = await x.next((e) => e.id === 'big');
    if (m.event !== 'token') { assert.equal(m.event, 'done', JSON.stringify(m)); break; }
    big.push(m);
  }
  assert.ok(big.length > 0 && big.every((t) => t.top_logprobs[0].length === 20));
  assert.ok(x.binaryCount() >= big.length, 'compressed frames reached the browser');
  // Protocol rules hold at the bridge too.
  x.send({ command: 'cancel', id: 'never' });
  assert.equal((await x.next((m) => m.event === 'error')).code, 'unknown_id');
  x.send({ command: 'fly' });
  assert.equal((await x.next((m) => m.event === 'error')).code, 'unknown_command');
  x.send({ command: 'status' });
  const s = await x.next((m) => m.event === 'status');
  assert.equal(s.backends.length, 2);
  x.ws.close();
  y.ws.close();
});

test('concurrent requests spread over both backends; a conversation stays on one', async () => {
  const c = await browser();
  const long = { max_tokens: 48, temperature: 0, ignore_eos: true };
  for (let i = 0; i < 4; i++) c.send({ command: 'generate', id: `p${i}`, prompt: 'Once upon a time', params: long });
  const results = await Promise.all([0, 1, 2, 3].map((i) => collect(c, `p${i}`)));
  const used = new Set(results.map((r) => r.end.backend));
  assert.equal(used.size, 2, [...used].join(' '));
  const where = [];
  for (let i = 0; i < 3; i++) {
    c.send({ command: 'generate', id: `s${i}`, conversation: 'talk-1', prompt: 'Hello', params: P });
    where.push((await collect(c, `s${i}`)).end.backend);
  }
  assert.equal(new Set(where).size, 1, where.join(' '));
  c.ws.close();
});

test('cancel goes through the bridge', async () => {
  const c = await browser();
  c.send({ command: 'generate', id: 'long', prompt: 'And it came to pass', params: { max_tokens: 400, ignore_eos: true } });
  await c.next((m) => m.id === 'long' && m.event === 'token');
  c.send({ command: 'cancel', id: 'long' });
  const end = await c.next((m) => m.id === 'long' && m.event !== 'token');
  assert.equal(end.event, 'done');
  assert.equal(end.finish_reason, 'cancelled');
  c.ws.close();
});

test('a backend that dies: its requests in flight fail, new conversations go to the other', async () => {
  const c = await browser();
  // Find which backend the conversation lives on, then kill that one mid-answer.
  c.send({ command: 'generate', id: 'probe', conversation: 'doomed', prompt: 'Hello', params: P });
  const victimUrl = (await collect(c, 'probe')).end.backend;
  const [victim, survivor] = victimUrl.endsWith(`:${a.port}/ws`) ? [a, b] : [b, a];
  c.send({ command: 'generate', id: 'cut', conversation: 'doomed', prompt: 'Once upon a time', params: { max_tokens: 450, ignore_eos: true } });
  await c.next((m) => m.id === 'cut' && m.event === 'token');
  victim.proc.kill('SIGKILL');
  await victim.exited;
  const end = await c.next((m) => m.id === 'cut' && m.event !== 'token');
  assert.equal(end.event, 'error');
  assert.equal(end.code, 'backend_unavailable');
  assert.match(end.message, /went away/);
  // New requests, the same conversation included, go to the survivor.
  for (const [id, conversation] of [['n1', undefined], ['n2', 'doomed'], ['n3', 'fresh']]) {
    c.send({ command: 'generate', id, conversation, prompt: 'Hello', params: P });
    const r = await collect(c, id);
    assert.equal(r.end.event, 'done', JSON.stringify(r.end));
    assert.equal(r.end.backend, `ws://127.0.0.1:${survivor.port}/ws`);
  }
  const s = await waitFor(async () => {
    const j = await (await fetch(`${base}/v1/status`)).json();
    return j.backends.find((x) => x.url === victimUrl).state === 'unreachable' && j;
  }, 10000, 'the dead backend to show as unreachable');
  assert.equal(s.state, 'ok');
  assert.match(s.backends.find((x) => x.url === victimUrl).reason, /refused|closed/);
  assert.equal((await fetch(`${base}/health`)).status, 200);
  // With both gone: /health 503 and a clear error for new requests.
  await survivor.stop();
  await waitFor(async () => (await fetch(`${base}/health`)).status === 503, 10000, '/health 503');
  c.send({ command: 'generate', id: 'none', prompt: 'Hello', params: P });
  const e = await c.next((m) => m.id === 'none');
  assert.equal(e.event, 'error');
  assert.equal(e.code, 'backend_unavailable');
  assert.match(e.message, /no backend is available/);
  c.ws.close();
});

test('a backend that drains: new requests for it go to the other without an error', async () => {
  const [c, d] = [await startServer(PACED), await startServer(PACED)];
  // Slow polling: the bridge learns of the drain from the backend's refusal, not from a poll.
  const ui2 = spawnTandem(['ui', '--backend', String(c.port), '--backend', String(d.port), '--api-key', API_KEY,
    '--port', '0', '--poll-interval', '30']);
  try {
    const port = await waitFor(() => ui2.out.stdout.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)?.[1], 20000, 'the ui');
    await waitFor(() => (ui2.out.stderr.match(/linked to/g) ?? []).length === 2, 20000, 'both links');
    const saved = wsUrl;
    wsUrl = `ws://127.0.0.1:${port}/ws`;
    const br = await browser();
    wsUrl = saved;
    br.send({ command: 'generate', id: 'probe', conversation: 'k', prompt: 'Hello', params: P });
    const xUrl = (await collect(br, 'probe')).end.backend;
    const [x, y] = xUrl.endsWith(`:${c.port}/ws`) ? [c, d] : [d, c];
    // A long request keeps x draining for a while after SIGTERM.
    br.send({ command: 'generate', id: 'hold', conversation: 'k', prompt: 'Once upon a time', params: { max_tokens: 400, ignore_eos: true } });
    await br.next((m) => m.id === 'hold' && m.event === 'token');
    x.proc.kill('SIGTERM');
    await waitFor(async () => (await fetch(`${x.base}/health`).catch(() => ({ status: 0 }))).status !== 200, 10000, 'x draining');
    br.send({ command: 'generate', id: 'after', conversation: 'k', prompt: 'Hello', params: P });
    const after = await collect(br, 'after');
    assert.equal(after.end.event, 'done', JSON.stringify(after.end));
    assert.equal(after.end.backend, `ws://127.0.0.1:${y.port}/ws`);
    assert.match(ui2.out.stderr, /refused a request \(shutting_down\); sent it to another backend/);
    br.ws.close();
    await x.exited;
  } finally {
    ui2.proc.kill('SIGTERM');
    await ui2.exited;
    for (const s of [c, d]) await s.stop();
  }
});
