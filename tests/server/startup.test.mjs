// Start-up: the config file and flags; bad settings stop the start with a
// message naming the key; flags override the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from './harness.mjs';

const BIN = process.env.TANDEM_SERVER_BIN;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-serve-'));

function serveWith(config, flags = []) {
  const file = path.join(dir, 'tandem.json');
  fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config));
  return spawnSync(BIN, ['serve', '--config', file, '--port', '0', ...flags], { encoding: 'utf8', timeout: 20000 });
}

test('bad config values stop the start with a message naming the key', () => {
  const cases = [
    [{ modle_path: 'x' }, 'modle_path'],
    [{ batch_size: '4' }, 'batch_size'],
    [{ batch_size: 0 }, 'batch_size'],
    [{ device_map: 'cuda:0' }, 'device_map'],
    [{ max_memory: { cpu: 'lots' } }, 'max_memory.cpu'],
    [{ max_memory: { cpu: '1KB' } }, 'max_memory.cpu'],
    [{ port: 123456 }, 'port'],
    [{ host: 'not an address' }, 'host'],
    [{ api_key_file: path.join(dir, 'missing-key') }, 'api_key_file'],
    ['{"batch_size": ', 'not valid JSON'],
  ];
  for (const [config, key] of cases) {
    const r = serveWith(config);
    assert.equal(r.status, 1, JSON.stringify(config) + ': ' + r.stderr);
    assert.ok(r.stderr.includes(key), `${JSON.stringify(config)} -> ${r.stderr}`);
    assert.equal(r.stdout, '');
  }
  const flag = serveWith({}, ['--batch-size', '0']);
  assert.equal(flag.status, 1);
  assert.match(flag.stderr, /batch_size/);
});

test('a config file serves; flags override it; api_key_file is read', async () => {
  const keyFile = path.join(dir, 'key');
  fs.writeFileSync(keyFile, 'file-key\n');
  const file = path.join(dir, 'good.json');
  fs.writeFileSync(file, JSON.stringify({ model_path: process.env.TANDEM_DEMO_MODEL, batch_size: 3, context_window: 256,
    max_memory: { cpu: '2GB' }, max_queued_requests: 7, port: 1, api_key_file: keyFile }));
  // --port 0 overrides the file's port; the harness adds its own --api-key, so
  // start without it here.
  const server = await startServer({ batch: 3, queue: 7, ctx: 256, extra: ['--config', file] });
  try {
    const s = await fetch(server.base + '/v1/status', { headers: { Authorization: 'Bearer test-key-123' } });
    const status = await s.json();
    assert.equal(status.batch.batch_size, 3);
    assert.equal(status.context_window, 256);
    assert.equal(status.queue.max_queued_requests, 7);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
  // Without the flag, the key comes from api_key_file.
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
  cfg.port = 0;
  fs.writeFileSync(file, JSON.stringify(cfg));
  const { spawn } = await import('node:child_process');
  const proc = spawn(BIN, ['serve', '--config', file, '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; const m = out.match(/127\.0\.0\.1:(\d+)/); if (m) resolve(m[1]); });
    proc.on('exit', (c) => reject(new Error('exited ' + c)));
  });
  const base = `http://127.0.0.1:${port}`;
  assert.equal((await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer file-key' } })).status, 200);
  assert.equal((await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer test-key-123' } })).status, 401);
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  proc.kill('SIGINT');
  assert.equal(await exited, 0);
});

test('request_timeout_s ends a long request with finish_reason timeout', async () => {
  const server = await startServer({ extra: ['--request-timeout-s', '0.1'] });
  try {
    const res = await fetch(server.base + '/v1/completions', {
      method: 'POST', headers: { Authorization: 'Bearer test-key-123', 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: 'And it came to pass', max_tokens: 450, ignore_eos: true }),
    });
    const r = await res.json();
    assert.equal(res.status, 200);
    assert.equal(r.choices[0].finish_reason, 'timeout');
    assert.ok(r.usage.completion_tokens < 450);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});
