// `tandem status` against a live backend and a dead one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, API_KEY, runTandem, spawnTandem, waitFor } from './client_harness.mjs';

let server;
before(async () => { server = await startServer({ batch: 4, queue: 16 }); });
after(async () => { assert.equal((await server.stop()).code, 0); });

test('a live backend: JSON fields are sane, exit code 0', async () => {
  const r = await runTandem(['status', '--backend', `ws://127.0.0.1:${server.port}`, '--api-key', API_KEY, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.all_up, true);
  assert.equal(j.backends.length, 1);
  const b = j.backends[0];
  assert.equal(b.url, `ws://127.0.0.1:${server.port}/ws`);
  assert.equal(b.state, 'ok');
  assert.ok(b.latency_ms >= 0);
  assert.equal(b.status.model.id, 'demo-q8_0');
  assert.equal(b.status.batch.batch_size, 4);
  assert.equal(b.status.queue.max_queued_requests, 16);
  assert.ok(b.status.kv_cache.blocks_total > 0);
  assert.ok(b.status.kv_cache.usage >= 0 && b.status.kv_cache.usage <= 1);
  assert.ok(b.status.uptime_s > 0);
});

test('the human view names the model, requests, KV cache and tokens/s', async () => {
  const r = await runTandem(['status', '--backend', String(server.port), '--api-key', API_KEY]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`ws://127\\.0\\.0\\.1:${server.port}/ws  ok`));
  assert.match(r.stdout, /model +demo-q8_0 \(context 512\)/);
  assert.match(r.stdout, /requests +\d+ running \(batch 4\), \d+ queued \(max 16\)/);
  assert.match(r.stdout, /KV cache +\d+ \/ \d+ blocks/);
  assert.match(r.stdout, /tokens\/s +[\d.]+ generated/);
});

test('a dead backend: unreachable with the reason, non-zero exit', async () => {
  const r = await runTandem(['status', '--backend', '127.0.0.1:1']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /ws:\/\/127\.0\.0\.1:1\/ws  UNREACHABLE/);
  assert.match(r.stdout, /nothing is listening at 127\.0\.0\.1:1 \(connection refused\)/);
  assert.match(r.stderr, /1 of 1 backend is not up/);
  const both = await runTandem(['status', '--backend', String(server.port), '--backend', '127.0.0.1:1', '--api-key', API_KEY, '--json']);
  assert.equal(both.code, 1);
  const j = JSON.parse(both.stdout);
  assert.equal(j.all_up, false);
  assert.deepEqual(j.backends.map((b) => b.state), ['ok', 'unreachable']);
  assert.match(j.backends[1].reason, /connection refused/);
});

test('a wrong API key is an error that says what to do', async () => {
  const r = await runTandem(['status', '--backend', String(server.port), '--api-key', 'wrong', '--json']);
  assert.equal(r.code, 1);
  const b = JSON.parse(r.stdout).backends[0];
  assert.equal(b.state, 'error');
  assert.match(b.reason, /--api-key/);
});

test('--watch refreshes until stopped, with a live tokens/s', async () => {
  const t = spawnTandem(['status', '--backend', String(server.port), '--api-key', API_KEY, '--watch', '--json', '--interval', '0.3']);
  await waitFor(() => t.out.stdout.split('\n').filter(Boolean).length >= 3, 20000, 'three refreshes');
  t.proc.kill('SIGINT');
  const { code } = await t.exited;
  assert.equal(code, 0);
  const rounds = t.out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.ok(rounds.length >= 3);
  assert.equal(rounds[0].backends[0].tokens_per_s, undefined, 'no rate before a second sample');
  assert.ok(rounds[1].backends[0].tokens_per_s >= 0);
});
