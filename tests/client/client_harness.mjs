// Runs the tandem client binary for the node tests; servers come from the
// server suite's harness (a real tandem-server on a free port).
import { spawn } from 'node:child_process';

export { startServer, require, API_KEY, eventually } from '../server/harness.mjs';

const BIN = process.env.TANDEM_BIN;
if (!BIN) throw new Error('set TANDEM_BIN (ctest does)');

// Runs `tandem args...` to the end. `input`: what stdin gets (then EOF).
// Resolves with { code, signal, stdout, stderr }.
export function runTandem(args, { input = '', timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`tandem ${args[0]} ran over ${timeoutMs} ms: ${stderr}`)); }, timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Let the pipes drain.
      setImmediate(() => resolve({ code, signal, stdout, stderr }));
    });
    proc.stdin.end(input);
  });
}

// Starts a long-running `tandem args...` and gives live access to its output.
export function spawnTandem(args) {
  const proc = spawn(BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '', stdoutChunks: [] };
  proc.stdout.on('data', (d) => { out.stdout += d; out.stdoutChunks.push({ at: Date.now(), text: d.toString() }); });
  proc.stderr.on('data', (d) => { out.stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return { proc, out, exited };
}

// Polls until `f()` is truthy (f may be async); throws after `ms`.
export async function waitFor(f, ms = 20000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The stats lines `tandem chat` prints after each answer: [full, tokens, finish_reason] each.
const STATS = /\[TTFT (?:[\d.]+ ms|n\/a), [\d.]+ tok\/s, (\d+) tokens, (\w+)\]/g;
export function statsLines(text) { return [...text.matchAll(STATS)]; }
