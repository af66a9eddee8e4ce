#!/usr/bin/env node
// Server benchmark (not a test): 1..32 concurrent streaming completions
// against a real tandem-server; prints aggregate tokens/s, p50/p99 TTFT and
// the server's time outside engine forward passes per generated token.
//
//   node bench/server/server_bench.mjs [--bin build/bin/tandem-server]
//        [--model models/demo/demo-q8_0.gguf] [--tokens 64] [--rounds 2]
//        [--levels 1,2,4,8,16,32] [--threads 0] [--url http://host:port]
//
// With --url it measures a running server (started with a batch size of at
// least the largest level, and no API key); otherwise it starts its own on a
// free port on 127.0.0.1 with --batch-size 32.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const bin = args.bin ?? path.join(root, 'build/bin/tandem-server');
const model = args.model ?? path.join(root, 'models/demo/demo-q8_0.gguf');
const maxTokens = Number(args.tokens ?? 64);
const rounds = Number(args.rounds ?? 2);
const levels = (args.levels ?? '1,2,4,8,16,32').split(',').map(Number);
const PROMPTS = ['In the beginning', 'And it came to pass', 'Blessed are the meek', 'The LORD is my shepherd',
  'You will meet a tall', 'Verily I say unto you', 'A penny saved', 'Thou shalt not'];

async function startServer() {
  const proc = spawn(bin, ['serve', '--model', model, '--port', '0', '--batch-size', String(Math.max(...levels)),
    '--max-queued-requests', '256', '--ctx', '512', '--threads', String(args.threads ?? 0), '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/); if (m) resolve(m[1]); });
    proc.on('exit', (c) => reject(new Error('server exited ' + c)));
  });
  return { base: `http://127.0.0.1:${port}`, stop: () => new Promise((r) => { proc.on('exit', r); proc.kill('SIGTERM'); }) };
}

async function metrics(base) {
  const text = await (await fetch(base + '/metrics')).text();
  const get = (name) => Number(text.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ')[1] ?? NaN);
  return { step: get('tandem_engine_step_seconds_total'), tokens: get('tandem_generation_tokens_total'), steps: get('tandem_engine_steps_total') };
}

// One streaming request; returns TTFT (first content byte) and token count.
async function stream(base, prompt) {
  const t0 = performance.now();
  const res = await fetch(base + '/v1/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0.8, seed: 1, ignore_eos: true, stream: true,
      stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  let ttft = null;
  let tokens = 0;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!line.startsWith('data: {')) continue;
      const j = JSON.parse(line.slice(6));
      if (ttft === null && j.choices?.[0]?.text) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { ttft: ttft ?? performance.now() - t0, tokens };
}

function pct(sorted, p) { return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]; }

const server = args.url ? { base: args.url, stop: async () => {} } : await startServer();
await stream(server.base, 'warm up');
console.log(`model ${path.basename(model)}, ${maxTokens} tokens per stream, ${rounds} rounds per level`);
console.log('streams | tok/s (all) | TTFT p50 ms | TTFT p99 ms | forward ms/token | outside forward ms/token | steps');
for (const c of levels) {
  const ttfts = [];
  let tokens = 0;
  const m0 = await metrics(server.base);
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    const results = await Promise.all(Array.from({ length: c }, (_, i) => stream(server.base, PROMPTS[i % PROMPTS.length])));
    for (const x of results) { ttfts.push(x.ttft); tokens += x.tokens; }
  }
  const wall = (performance.now() - t0) / 1000;
  const m1 = await metrics(server.base);
  const gen = m1.tokens - m0.tokens;
  const step = m1.step - m0.step;
  ttfts.sort((a, b) => a - b);
  console.log([c, (tokens / wall).toFixed(1), pct(ttfts, 50).toFixed(1), pct(ttfts, 99).toFixed(1),
    (1000 * step / gen).toFixed(3), (1000 * (wall - step) / gen).toFixed(3), m1.steps - m0.steps].join(' | '));
}
await server.stop();
