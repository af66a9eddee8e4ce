// `tandem bench` against a real tandem-server (the demo model, one engine
// thread): both APIs, random lengths with zstd, a context overflow counted
// per level, a wrong key and a dead backend.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, API_KEY } from '../../server/harness.mjs';

const BIN = process.env.TANDEM_BIN;
if (!BIN) throw new Error('set TANDEM_BIN (ctest does)');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-'));
let server;

before(async () => { server = await startServer({ batch: 4, queue: 64, ctx: 512 }); });
after(async () => {
  if (server) await server.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function bench(args) {
  return new Promise((resolve) => {
    const proc = spawn(BIN, ['bench', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => { stderr += d; });
    proc.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function checkSummary(s, what) {
  assert.ok(s.count > 0, `${what}: samples`);
  assert.ok(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, `${what}: ordered ${JSON.stringify(s)}`);
  assert.ok(s.mean >= s.min && s.mean <= s.max, `${what}: mean within range`);
}

// Every level ran every request, all succeeded (or failed only with a
// tolerated code, at most a third of them), and the numbers make sense.
function checkReport(report, { requests, levels, ignoreEos = true, tolerate = [] }) {
  assert.deepEqual(report.levels.map((l) => l.concurrency), levels);
  for (const l of report.levels) {
    const where = `level ${l.concurrency}`;
    assert.equal(l.requests, requests, where);
    assert.equal(l.succeeded + l.failed, requests, where);
    for (const code of Object.keys(l.errors)) assert.ok(tolerate.includes(code), `${where}: ${JSON.stringify(l.errors)}`);
    assert.ok(l.failed <= requests / 3, `${where}: ${JSON.stringify(l.errors)}`);
    assert.equal(l.raw.length, requests, where);
    if (ignoreEos) assert.equal(l.short_outputs, 0, where);
    assert.ok(l.duration_s > 0 && l.output_tokens_per_s > 0 && l.requests_per_s > 0, where);
    checkSummary(l.ttft_ms, `${where} ttft`);
    checkSummary(l.itl_ms, `${where} itl`);
    checkSummary(l.e2e_ms, `${where} e2e`);
    checkSummary(l.stream_tokens_per_s, `${where} stream tok/s`);
    assert.ok(l.ttft_ms.min > 0, `${where}: ttft > 0`);
    assert.equal(l.ttft_ms.count, l.succeeded, where);
    let out = 0;
    for (const r of l.raw.filter((q) => q.ok)) {
      assert.ok(r.ttft_ms > 0 && r.ttft_ms <= r.e2e_ms, `${where} request ${r.index}: ttft ${r.ttft_ms} e2e ${r.e2e_ms}`);
      if (ignoreEos) assert.equal(r.completion_tokens, r.max_tokens, `${where} request ${r.index}: ignore_eos gives max_tokens`);
      assert.equal(r.arrival_tokens.reduce((a, b) => a + b, 0), r.completion_tokens, 'every token arrived');
      for (let i = 1; i < r.arrival_ms.length; ++i) assert.ok(r.arrival_ms[i] >= r.arrival_ms[i - 1]);
      assert.ok(r.prompt_tokens > 0);
      out += r.completion_tokens;
    }
    assert.equal(l.output_tokens, out, where);
    // Aggregate throughput is the tokens over the level's wall time.
    assert.ok(Math.abs(l.output_tokens_per_s - out / l.duration_s) <= 0.01 * l.output_tokens_per_s + 0.01, where);
  }
}

function checkSvg(file) {
  const svg = fs.readFileSync(file, 'utf8');
  const lint = spawnSync('xmllint', ['--noout', file], { encoding: 'utf8' });
  if (!lint.error) assert.equal(lint.status, 0, `xmllint: ${lint.stderr}`);
  else {  // no XML parser here: basic checks
    assert.match(svg, /^<\?xml[^>]*\?>\s*<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\s*$/);
    const opens = (svg.match(/<(g|text|svg|circle)[\s>]/g) ?? []).length;
    const closes = (svg.match(/<\/(g|text|svg|circle)>/g) ?? []).length;
    assert.equal(opens, closes, 'balanced tags');
  }
  for (const label of ['Output throughput', 'Time to first token', 'concurrent streams', 'tokens/s'])
    assert.ok(svg.includes(label), label);
  assert.ok(!svg.includes('NaN') && !svg.includes('nan'));
}

test('tandem API: fixed lengths over a sweep, JSON and SVG', async () => {
  const json = path.join(tmp, 'tandem.json');
  const svg = path.join(tmp, 'tandem.svg');
  const r = await bench(['--backend', server.base, '--api-key', API_KEY, '--requests', '6', '--concurrency', '1,3',
    '--prompt-tokens', '24', '--max-tokens', '12', '--warmup', '1', '--json-out', json, '--plot', svg]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /api tandem\), model demo-q8_0/);
  assert.match(r.stdout, /TTFT ms/);
  assert.match(r.stdout, /^\s+3\s+6\/6\s/m);
  assert.match(r.stderr, /level c=1: 6 requests/, 'plain progress lines when stderr is not a terminal');
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  assert.equal(report.config.api, 'tandem');
  assert.equal(report.prompt_sizing.method, 'tokenize');
  checkReport(report, { requests: 6, levels: [1, 3] });
  for (const r of report.levels[0].raw) assert.equal(r.prompt_tokens, 24, '/tokenize sizes prompts exactly');
  checkSvg(svg);
});

test('tandem API: random lengths from a seed, zstd', async () => {
  const json = path.join(tmp, 'random.json');
  const r = await bench(['--backend', server.base.replace('http:', 'ws:'), '--api-key', API_KEY, '--requests', '8',
    '--concurrency', '4', '--prompt-tokens', '10:40', '--max-tokens', '4:16', '--seed', '3', '--zstd', '--warmup', '0',
    '--json-out', json]);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  checkReport(report, { requests: 8, levels: [4] });
  const raw = report.levels[0].raw;
  for (const q of raw) {
    assert.ok(q.max_tokens >= 4 && q.max_tokens <= 16);
    assert.ok(q.prompt_tokens_target >= 10 && q.prompt_tokens_target <= 40);
    assert.equal(q.prompt_tokens, q.prompt_tokens_target);
  }
  assert.ok(new Set(raw.map((q) => q.max_tokens)).size > 1, 'lengths vary');
});

test('OpenAI API against tandem-server\'s own /v1/completions', async () => {
  const json = path.join(tmp, 'openai.json');
  const svg = path.join(tmp, 'openai.svg');
  const r = await bench(['--api', 'openai', '--backend', server.base + '/v1', '--api-key', API_KEY, '--requests', '24',
    '--concurrency', '1,3', '--prompt-tokens', '24', '--max-tokens', '12', '--warmup', '1', '--json-out', json,
    '--plot', svg]);
  // Every request must succeed: tandem-server's disconnect watch peeks
  // before it takes a readable socket for a client that left.
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  assert.equal(report.config.api, 'openai');
  assert.equal(report.prompt_sizing.method, 'usage_fit');
  assert.equal(report.server.model, 'demo-q8_0', 'the model comes from /v1/models');
  checkReport(report, { requests: 24, levels: [1, 3] });
  for (const q of report.levels[0].raw.filter((q) => q.ok)) assert.ok(Math.abs(q.prompt_tokens - 24) <= 3, `prompt ${q.prompt_tokens} near 24`);
  checkSvg(svg);
});

test('a prompt longer than the context fails every request, counted per level', async () => {
  for (const api of ['tandem', 'openai']) {
    const json = path.join(tmp, `overflow-${api}.json`);
    const r = await bench(['--api', api, '--backend', server.base, '--api-key', API_KEY, '--requests', '3',
      '--concurrency', '1,2', '--prompt-tokens', '600', '--max-tokens', '16', '--warmup', '0', '--json-out', json]);
    assert.equal(r.code, 2, `${api}: ${r.stderr}`);
    assert.match(r.stdout, /concurrency 2: 3 of 3 requests failed: context_length_exceeded x3/, api);
    if (api === 'tandem') assert.match(r.stderr, /note: prompt \+ output can reach 616 tokens, over the context of 512/);
    const report = JSON.parse(fs.readFileSync(json, 'utf8'));
    for (const l of report.levels) {
      assert.equal(l.failed, 3);
      assert.equal(l.errors.context_length_exceeded, 3, `${api}: ${JSON.stringify(l.errors)}`);
      assert.equal(l.ttft_ms.count, 0);
    }
  }
});

test('a wrong API key stops the run with a clear message', async () => {
  for (const api of ['tandem', 'openai']) {
    const r = await bench(['--api', api, '--backend', server.base, '--api-key', 'wrong', '--requests', '1']);
    assert.equal(r.code, 1, api);
    assert.match(r.stderr, /error: .*API key/i, api);
  }
});

test('a dead backend exits non-zero and says so', async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  for (const api of ['tandem', 'openai']) {
    const json = path.join(tmp, `dead-${api}.json`);
    const r = await bench(['--api', api, '--backend', `http://127.0.0.1:${port}`, '--requests', '2', '--json-out', json]);
    assert.equal(r.code, 1, api);
    assert.match(r.stderr, /^error: .*connection refused.*is tandem-server running/m, api);
    assert.ok(!fs.existsSync(json), 'no report for a run that never started');
  }
});
