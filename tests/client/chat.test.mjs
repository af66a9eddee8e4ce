// `tandem chat` driven through stdin against a live tandem-server (demo model).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { startServer, require, API_KEY, runTandem, spawnTandem, waitFor, statsLines } from './client_harness.mjs';

const WebSocket = require('ws');
let server;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-chat-'));

before(async () => { server = await startServer(); });
after(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  if (server) assert.equal((await server.stop()).code, 0);
});

// What the backend answers to `messages` with `params`, straight over the protocol.
async function directAnswer(messages, params) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  let text = '';
  const done = new Promise((resolve, reject) => {
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.event === 'ready') ws.send(JSON.stringify({ command: 'generate', id: 'x', messages, params }));
      else if (m.event === 'token') text += m.text;
      else if (m.event === 'done') resolve();
      else if (m.event === 'error') reject(new Error(m.message));
    });
  });
  ws.send(JSON.stringify({ command: 'init', api_key: API_KEY }));
  await done;
  ws.close();
  return text;
}

test('a session through stdin: answers, /params, /save then /load, /reset', async () => {
  const saved = path.join(dir, 'one.json');
  const afterReset = path.join(dir, 'reset.json');
  const final = path.join(dir, 'final.json');
  const input = [
    '/params temperature=0 max_tokens=12',
    'Tell me a fortune',
    '/params temperature=-1',
    '/params warmth=2',
    `/save ${saved}`,
    '/reset',
    `/save ${afterReset}`,
    '/params max_tokens=default temperature=1',
    `/load ${saved}`,
    '/params',
    'And another one',
    `/save ${final}`,
    '/nonsense',
    '',
  ].join('\n');
  const r = await runTandem(['chat', '--backend', `ws://127.0.0.1:${server.port}`, '--api-key', API_KEY, '--system', 'Be brief.'], { input });
  assert.equal(r.code, 0, r.stderr);
  // Two answers, each followed by its timings.
  const stats = statsLines(r.stderr);
  assert.equal(stats.length, 2, r.stderr);
  for (const s of stats) assert.ok(Number(s[1]) > 0 && Number(s[1]) <= 12, s[0]);
  assert.match(r.stdout, /params: \{"max_tokens":12,"temperature":0\}/);
  // Bad /params are refused with a reason, and change nothing.
  assert.match(r.stderr, /temperature must be a number >= 0/);
  assert.match(r.stderr, /unknown parameter 'warmth'/);
  assert.match(r.stderr, /unknown command \/nonsense/);
  // The save file: system, user, assistant; the answer is what the backend gives for that conversation.
  const one = JSON.parse(fs.readFileSync(saved, 'utf8'));
  assert.deepEqual(one.params, { max_tokens: 12, temperature: 0 });
  assert.deepEqual(one.messages.map((m) => m.role), ['system', 'user', 'assistant']);
  assert.equal(one.messages[1].content, 'Tell me a fortune');
  const expected = await directAnswer(one.messages.slice(0, 2), one.params);
  assert.equal(one.messages[2].content, expected);
  assert.ok(r.stdout.includes(expected), 'the answer was printed');
  // /reset keeps only the system prompt.
  assert.deepEqual(JSON.parse(fs.readFileSync(afterReset, 'utf8')).messages, [{ role: 'system', content: 'Be brief.' }]);
  // /load brought back messages and params (the /params change after /reset is gone).
  assert.match(r.stdout, /Loaded 3 messages/);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('params: '));
  assert.equal(lines.at(-1), 'params: {"max_tokens":12,"temperature":0}');
  // The second turn was sent with the loaded history.
  const fin = JSON.parse(fs.readFileSync(final, 'utf8'));
  assert.deepEqual(fin.messages.slice(0, 3), one.messages);
  assert.equal(fin.messages[3].content, 'And another one');
  assert.equal(fin.messages[4].content, await directAnswer(fin.messages.slice(0, 4), fin.params));
});

test('tokens stream as they come, and Ctrl-C cancels the answer, not the chat', async () => {
  const saved = path.join(dir, 'cancel.json');
  // Steps of at least 5 ms: the 400 tokens take 2 s or more, time enough
  // for the Ctrl-C to land mid-answer however loaded the machine.
  const paced = await startServer({ stepDelayMs: 5 });
  after(() => paced.stop());
  const t = spawnTandem(['chat', '--backend', String(paced.port), '--api-key', API_KEY]);
  t.proc.stdin.write('/params max_tokens=400 ignore_eos=true\nTell me a very long story\n');
  after(() => t.proc.kill('SIGKILL'));  // a failing test leaves no chat behind
  await waitFor(() => t.out.stdoutChunks.some((c) => !c.text.startsWith('params:')), 30000, 'the first tokens');
  t.proc.kill('SIGINT');
  await waitFor(() => /cancelled\]/.test(t.out.stderr), 20000, 'the cancelled answer');
  // Still running: more commands work after the cancel...
  t.proc.stdin.write(`/save ${saved}\n`);
  await waitFor(() => /Saved 2 messages/.test(t.out.stdout), 20000, 'the save');
  // ...a lone Ctrl-C at the prompt only says how to leave, a second one leaves.
  t.proc.kill('SIGINT');
  await waitFor(() => /Ctrl-C again/.test(t.out.stderr), 20000, 'the hint');
  assert.equal(t.proc.exitCode, null, 'still running');
  t.proc.kill('SIGINT');
  const { code } = await t.exited;
  assert.equal(code, 0, t.out.stderr);
  const [s] = statsLines(t.out.stderr);
  assert.ok(Number(s[1]) < 400, 'stopped early: ' + s[0]);
  const answerChunks = t.out.stdoutChunks.filter((c) => !c.text.startsWith('params:'));
  assert.ok(answerChunks.length >= 2, 'the answer came in pieces');
  // The partial answer stays in the history.
  const file = JSON.parse(fs.readFileSync(saved, 'utf8'));
  assert.deepEqual(file.messages.map((m) => m.role), ['user', 'assistant']);
  assert.ok(file.messages[1].content.length > 0);
});

test('backend errors read as sentences', async () => {
  // A prompt that does not fit the 512-token context.
  const long = 'word '.repeat(1500);
  const r = await runTandem(['chat', '--backend', String(server.port), '--api-key', API_KEY], { input: `${long}\n` });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /no longer fits the model's context window/);
  const bad = await runTandem(['chat', '--backend', String(server.port), '--api-key', 'wrong'], { input: 'hi\n' });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /refused the API key.*--api-key/);
});

test('an unreachable backend is reported in plain words', async () => {
  const r = await runTandem(['chat', '--backend', 'ws://127.0.0.1:1', '--connect-wait', '1'], { input: 'hello\n' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot reach the backend: nothing is listening at 127\.0\.0\.1:1 \(connection refused\)/);
  assert.match(r.stderr, /your message was not sent/);
  assert.equal(r.stdout, '');
});

// waitFor for a chat `t` beside a server: a wait that fails also says
// whether the chat still runs, and what the chat and the server
// (serverStderr()) printed.
function explainedWait(t, serverStderr) {
  return async (f, ms, what) => {
    try {
      await waitFor(f, ms, what);
    } catch (e) {
      throw new Error(`${e.message} (the chat ${t.proc.exitCode === null ? 'still runs' : `exited ${t.proc.exitCode}`}); ` +
        `the chat printed:\n${t.out.stderr}\nthe server printed:\n${serverStderr()}`);
    }
  };
}

test('a backend that goes away is reported, and the chat keeps its history', async () => {
  const other = await startServer();
  const saved = path.join(dir, 'lost.json');
  // 5 s for the first connection (1 s was not always enough on a loaded
  // 2-core CI machine: "Hello" was given up before the link was up); the
  // message after the server stops then gives up after 5 s too.
  const t = spawnTandem(['chat', '--backend', String(other.port), '--api-key', API_KEY, '--connect-wait', '5']);
  // A wait that fails says what the chat and the server printed, and the
  // chat and the server never outlive the test (the file would hang until
  // ctest's timeout).
  const explained = explainedWait(t, () => other.stderr());
  try {
    t.proc.stdin.write('/params max_tokens=4 temperature=0\nHello\n');
    await explained(() => statsLines(t.out.stderr).length > 0, 30000, 'the first answer');
    await other.stop();
    await explained(() => /lost the backend: .*closed the connection/.test(t.out.stderr), 20000, 'the lost-backend notice');
    t.proc.stdin.write(`Are you there?\n/save ${saved}\n`);
    t.proc.stdin.end();
    const { code } = await t.exited;
    assert.equal(code, 1, 'a message could not be sent');
    assert.match(t.out.stderr, /your message was not sent/);
    assert.deepEqual(JSON.parse(fs.readFileSync(saved, 'utf8')).messages.map((m) => m.role), ['user', 'assistant']);
  } finally {
    if (t.proc.exitCode === null && t.proc.signalCode === null) t.proc.kill('SIGKILL');
    await other.stop();
  }
});

// A server on a fixed port, so that it can come back where it was.
async function serveOn(port) {
  for (let attempt = 0; ; attempt++) {
    const proc = spawn(process.env.TANDEM_SERVER_BIN, ['serve', '--model', process.env.TANDEM_DEMO_MODEL, '--port', String(port),
      '--threads', process.env.TANDEM_TEST_THREADS ?? '2', '--ctx', '256', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    let out = '', err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    const up = await Promise.race([waitFor(() => out.includes('listening on'), 60000, 'the server').then(() => true), exited.then(() => false)]);
    if (up) return { proc, exited, stderr: () => err };
    if (attempt >= 20) throw new Error(`no server on port ${port}`);
    await new Promise((r) => setTimeout(r, 250));  // the port may still be held for a moment
  }
}

test('a backend that restarts: the chat reconnects and goes on with its history', async () => {
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
  });
  let s = await serveOn(port);
  const saved = path.join(dir, 'restart.json');
  const t = spawnTandem(['chat', '--backend', String(port), '--connect-wait', '60']);
  // As in the lost-backend test: a wait that fails says what the chat and
  // the server printed, and neither outlives the test.
  const explained = explainedWait(t, () => s.stderr());
  let code;
  try {
    t.proc.stdin.write('/params max_tokens=4 temperature=0\nHello\n');
    await explained(() => statsLines(t.out.stderr).length === 1, 30000, 'the first answer');
    s.proc.kill('SIGKILL');
    await s.exited;
    await explained(() => /lost the backend/.test(t.out.stderr), 20000, 'the lost-backend notice');
    s = await serveOn(port);
    await explained(() => /reconnected to/.test(t.out.stderr), 30000, 'the reconnect');
    t.proc.stdin.write(`Again\n/save ${saved}\n`);
    t.proc.stdin.end();
    ({ code } = await t.exited);
  } finally {
    if (t.proc.exitCode === null && t.proc.signalCode === null) t.proc.kill('SIGKILL');
    if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGTERM');
    await s.exited;
  }
  assert.equal(code, 0, t.out.stderr);
  assert.equal(statsLines(t.out.stderr).length, 2);
  const file = JSON.parse(fs.readFileSync(saved, 'utf8'));
  assert.deepEqual(file.messages.map((m) => m.content).filter((_, i) => i % 2 === 0), ['Hello', 'Again']);
  assert.equal(file.messages.length, 4);
});
