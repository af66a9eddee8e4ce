// The WebSocket protocol (docs/PROTOCOL.md), with the `ws` npm package as the
// client and `fzstd` to read compressed frames.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, require, API_KEY } from './harness.mjs';

const WebSocket = require('ws');
const fzstd = require('fzstd');
let server;

// Steps of at least 5 ms: a 400-token reply lasts long enough for the
// cancel test's round trips, however loaded the machine.
before(async () => { server = await startServer({ stepDelayMs: 5 }); });
after(async () => { assert.equal((await server.stop()).code, 0); });

// A socket with a message queue: next(pred) resolves with the next message
// that matches (binary messages are zstd frames, decompressed here).
async function connect() {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
  const queue = [];
  const waiters = [];
  const stats = { binary: 0, text: 0 };
  ws.on('message', (data, isBinary) => {
    let text;
    if (isBinary) {
      stats.binary++;
      text = new TextDecoder().decode(fzstd.decompress(new Uint8Array(data)));
    } else {
      stats.text++;
      text = data.toString();
    }
    queue.push(JSON.parse(text));
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i];
      const idx = queue.findIndex(w.pred);
      if (idx >= 0) { waiters.splice(i--, 1); w.resolve(queue.splice(idx, 1)[0]); }
    }
  });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const next = (pred = () => true, ms = 20000) => new Promise((resolve, reject) => {
    const idx = queue.findIndex(pred);
    if (idx >= 0) return resolve(queue.splice(idx, 1)[0]);
    const w = { pred, resolve };
    waiters.push(w);
    setTimeout(() => { const i = waiters.indexOf(w); if (i >= 0) { waiters.splice(i, 1); reject(new Error('no message in time')); } }, ms).unref();
  });
  const send = (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  return { ws, next, send, stats };
}

// Collects a request's token events until done (or error).
async function collect(c, id) {
  const tokens = [];
  for (;;) {
    const m = await c.next((x) => x.id === id);
    if (m.event === 'token') tokens.push(m);
    else return { tokens, end: m, text: tokens.map((t) => t.text).join('') };
  }
}

test('init answers ready; commands before init are refused; wrong key is refused', async () => {
  const c = await connect();
  c.send({ command: 'status' });
  assert.equal((await c.next()).code, 'init_required');
  c.send({ command: 'init', api_key: 'nope' });
  const e = await c.next();
  assert.equal(e.event, 'error');
  assert.equal(e.code, 'unauthorized');
  c.send({ command: 'init', api_key: API_KEY, model: 'demo-q8_0' });
  const r = await c.next();
  assert.equal(r.event, 'ready');
  assert.equal(r.model, 'demo-q8_0');
  assert.equal(r.context_size, 512);
  assert.match(r.server_version, /^\d+\.\d+\.\d+/);
  c.send({ command: 'models' });
  assert.equal((await c.next()).data[0].id, 'demo-q8_0');
  c.send({ command: 'status' });
  const s = await c.next();
  assert.equal(s.event, 'status');
  assert.equal(s.batch.batch_size, 4);
  c.ws.close();
});

test('two interleaved generates on one socket both stream to the end', async () => {
  const c = await connect();
  c.send({ command: 'init', api_key: API_KEY });
  await c.next((m) => m.event === 'ready');
  const params = { max_tokens: 24, temperature: 0, ignore_eos: true };
  const order = [];
  c.ws.on('message', (d, bin) => { if (!bin) { const m = JSON.parse(d.toString()); if (m.event === 'token') order.push(m.id); } });
  c.send({ command: 'generate', id: 'a', prompt: 'In the beginning', params });
  c.send({ command: 'generate', id: 'b', messages: [{ role: 'user', content: 'Tell me a fortune' }], params });
  const [a, b] = await Promise.all([collect(c, 'a'), collect(c, 'b')]);
  for (const x of [a, b]) {
    assert.equal(x.end.event, 'done');
    assert.equal(x.end.finish_reason, 'length');
    assert.equal(x.end.usage.completion_tokens, 24);
    assert.equal(x.tokens.flatMap((t) => t.token_ids).length, 24);
    assert.ok(x.end.timings.ttft_ms >= 0 && x.end.timings.queue_ms >= 0 && x.end.timings.tokens_per_s > 0);
  }
  // Multiplexed, not one after the other: b's first token comes before a's last.
  assert.ok(order.indexOf('b') < order.lastIndexOf('a'), order.join(''));
  // Each stream's text is what its own token ids decode to (streams leave out
  // special tokens such as <|endoftext|>, which ignore_eos lets through).
  for (const [x, id] of [[a, 'a'], [b, 'b']]) {
    const ids = x.tokens.flatMap((t) => t.token_ids);
    const r = await fetch(`http://127.0.0.1:${server.port}/detokenize`, {
      method: 'POST', headers: { Authorization: `Bearer ${API_KEY}` }, body: JSON.stringify({ tokens: ids, skip_special_tokens: true }) });
    assert.equal((await r.json()).prompt, x.text, id);
  }
  c.ws.close();
});

test('cancel ends a request with finish_reason cancelled; unknown and duplicate ids are errors', async () => {
  const c = await connect();
  c.send({ command: 'init', api_key: API_KEY });
  await c.next((m) => m.event === 'ready');
  c.send({ command: 'generate', id: 'long', prompt: 'And it came to pass', params: { max_tokens: 400, ignore_eos: true } });
  await c.next((m) => m.id === 'long' && m.event === 'token');
  c.send({ command: 'generate', id: 'long', prompt: 'x' });
  assert.equal((await c.next((m) => m.event === 'error')).code, 'duplicate_id');
  c.send({ command: 'cancel', id: 'long' });
  const end = await c.next((m) => m.id === 'long' && m.event !== 'token');
  assert.equal(end.event, 'done');
  assert.equal(end.finish_reason, 'cancelled');
  assert.ok(end.usage.completion_tokens < 400);
  c.send({ command: 'cancel', id: 'never-was' });
  const e = await c.next((m) => m.event === 'error');
  assert.equal(e.code, 'unknown_id');
  assert.equal(e.id, 'never-was');
  c.ws.close();
});

test('zstd: large messages come as binary zstd frames, small ones as text', async () => {
  const c = await connect();
  c.send({ command: 'init', api_key: API_KEY, compression: 'zstd' });
  const ready = await c.next((m) => m.event === 'ready');
  assert.equal(ready.compression, 'zstd');
  assert.ok(ready.compression_threshold > 0);
  c.send({ command: 'generate', id: 'z', prompt: 'In the beginning', params: { max_tokens: 4, temperature: 0 } });
  const r = await collect(c, 'z');
  assert.equal(r.end.event, 'done');
  assert.equal(c.stats.binary, 0, 'small events stay text');
  assert.ok(c.stats.text >= 5);
  // With 20 top logprobs a token event is well over the threshold.
  c.send({ command: 'generate', id: 'big', prompt: 'In the beginning', params: { max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 20 } });
  const big = await collect(c, 'big');
  assert.equal(big.end.event, 'done');
  assert.equal(big.tokens.length > 0 && big.tokens[0].top_logprobs[0].length, 20);
  assert.ok(c.stats.binary >= big.tokens.length, 'large events came as zstd frames');
  c.ws.close();
});

test('malformed JSON and bad commands give errors without killing the socket', async () => {
  const c = await connect();
  c.send('{"command": "init", ');
  const e1 = await c.next();
  assert.equal(e1.event, 'error');
  assert.equal(e1.code, 'invalid_json');
  assert.equal(e1.id, undefined);
  c.send('[1,2]');
  assert.equal((await c.next()).code, 'invalid_request');
  c.send({ command: 'init', api_key: API_KEY });
  await c.next((m) => m.event === 'ready');
  c.send({ command: 'fly', id: 'q' });
  const e2 = await c.next();
  assert.equal(e2.code, 'unknown_command');
  assert.equal(e2.id, 'q');
  c.send({ command: 'generate', id: 'p', prompt: 'x', params: { temperature: 'hot' } });
  const e3 = await c.next((m) => m.id === 'p');
  assert.equal(e3.event, 'error');
  assert.match(e3.message, /temperature/);
  c.send({ command: 'generate', id: 'ok', prompt: 'In the beginning', params: { max_tokens: 3, temperature: 0 } });
  const r = await collect(c, 'ok');
  assert.equal(r.end.event, 'done');
  c.ws.close();
});

test('a binary frame from the client is invalid_request, and the socket stays usable', async () => {
  const c = await connect();
  c.ws.send(Buffer.from('{"command":"init"}'), { binary: true });
  const e = await c.next();
  assert.equal(e.event, 'error');
  assert.equal(e.code, 'invalid_request');
  c.send({ command: 'init', api_key: API_KEY });
  assert.equal((await c.next()).event, 'ready');
  c.ws.close();
});
