// OpenAI compatibility, with the official `openai` npm package as the client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, require, API_KEY, postJson, getText, metric, authHeaders, eventually } from './harness.mjs';

const OpenAI = require('openai');
let server;
let client;
let modelId;

before(async () => {
  server = await startServer();
  client = new OpenAI({ apiKey: API_KEY, baseURL: server.base + '/v1', maxRetries: 0, timeout: 30000 });
  const models = await client.models.list();
  modelId = models.data[0].id;
});
after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, 'SIGTERM drains and exits 0');
});

test('models list names the demo model', async () => {
  assert.equal(modelId, 'demo-q8_0');
  const m = await client.models.retrieve(modelId);
  assert.equal(m.id, modelId);
});

test('chat completion, non-streaming, with usage', async () => {
  const r = await client.chat.completions.create({
    model: modelId, messages: [{ role: 'user', content: 'Who made the heaven?' }], max_tokens: 12, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  // The same request streamed gives the same text (temperature 0).
  const stream = await client.chat.completions.create({
    model: modelId, messages: [{ role: 'user', content: 'Who made the heaven?' }], max_tokens: 12, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let sawRole = false;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) sawRole = true;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(sawRole);
  assert.equal(text, r.choices[0].message.content);
  assert.equal(finish, r.choices[0].finish_reason);
  assert.deepEqual(usage, r.usage);
});

test('completions, streaming and not, agree; length finish counts tokens', async () => {
  const body = { model: modelId, prompt: 'And it came to pass', max_tokens: 10, temperature: 0, ignore_eos: true };
  const r = await client.completions.create(body);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 10);
  const stream = await client.completions.create({ ...body, stream: true });
  let text = '';
  for await (const chunk of stream) for (const c of chunk.choices) text += c.text;
  assert.equal(text, r.choices[0].text);
});

test('n > 1 gives n choices; seeded sampling is reproducible', async () => {
  const body = { model: modelId, prompt: 'In the beginning', max_tokens: 8, temperature: 1.0, seed: 42, n: 3 };
  const a = await client.completions.create(body);
  const b = await client.completions.create(body);
  assert.equal(a.choices.length, 3);
  assert.deepEqual(a.choices.map((c) => c.index).sort(), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  const stream = await client.chat.completions.create({
    model: modelId, messages: [{ role: 'user', content: 'hello' }], max_tokens: 6, n: 2, stream: true, temperature: 0,
  });
  const seen = new Set();
  for await (const chunk of stream) for (const c of chunk.choices) seen.add(c.index);
  assert.deepEqual([...seen].sort(), [0, 1]);
});

test('stop strings end the text before the match', async () => {
  const base = { model: modelId, prompt: 'And it came to pass', max_tokens: 40, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  // Stop on a piece from the middle of the greedy continuation.
  const cut = Math.floor(full.length / 2);
  const stopStr = full.slice(cut, cut + 3);
  assert.ok(stopStr.length > 0, 'continuation long enough: ' + JSON.stringify(full));
  const r = await client.completions.create({ ...base, stop: [stopStr, 'zzzqqq'] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, full.slice(0, full.indexOf(stopStr)));
  const s = await client.completions.create({ ...base, stop: stopStr });
  assert.equal(s.choices[0].text, r.choices[0].text);
});

test('chat logprobs with top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model: modelId, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const e of content) {
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 3);
    // Greedy: the sampled token is the most likely one.
    assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4);
  }
});

test('error shapes: 400 bad JSON, 400 wrong types naming the field, 401, 404', async () => {
  const bad = await postJson(server.base, '/v1/chat/completions', '{"model": ');
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.type, 'invalid_request_error');
  assert.ok(bad.json.error.message.length > 0);
  assert.ok('param' in bad.json.error && 'code' in bad.json.error);

  await assert.rejects(
    client.chat.completions.create({ model: modelId, messages: [{ role: 'user', content: 'x' }], max_tokens: 'ten' }),
    (e) => e.status === 400 && e.error.param === 'max_tokens' && /max_tokens/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: modelId, messages: 'hello' }),
    (e) => e.status === 400 && e.error.param === 'messages');
  await assert.rejects(
    client.completions.create({ model: modelId, prompt: 'x', temperature: -1 }),
    (e) => e.status === 400 && /temperature/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 404 && e.error.code === 'model_not_found');

  const noKey = new OpenAI({ apiKey: 'wrong', baseURL: server.base + '/v1', maxRetries: 0 });
  await assert.rejects(noKey.models.list(), (e) => e.status === 401);
  const missing = await fetch(server.base + '/v1/models');
  assert.equal(missing.status, 401);
  assert.equal((await missing.json()).error.code, 'invalid_api_key');

  const route = await getText(server.base, '/v1/nothing-here');
  assert.equal(route.status, 404);
  assert.equal(JSON.parse(route.text).error.code, 'not_found');
});

test('too long a prompt is context_length_exceeded, never truncated', async () => {
  await assert.rejects(
    client.completions.create({ model: modelId, prompt: 'word '.repeat(2000), max_tokens: 4 }),
    (e) => e.status === 400 && e.error.code === 'context_length_exceeded');
});

test('tokenize, detokenize, apply-template', async () => {
  const t = await postJson(server.base, '/tokenize', { prompt: 'In the beginning', add_special: false });
  assert.equal(t.status, 200);
  assert.ok(t.json.tokens.length > 0);
  assert.equal(t.json.count, t.json.tokens.length);
  const d = await postJson(server.base, '/detokenize', { tokens: t.json.tokens });
  assert.equal(d.json.prompt, 'In the beginning');
  const a = await postJson(server.base, '/apply-template', { messages: [{ role: 'user', content: 'hi there' }] });
  assert.equal(a.status, 200);
  assert.ok(a.json.prompt.includes('hi there'));
  const bad = await postJson(server.base, '/detokenize', { tokens: [1, 'x'] });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'tokens');
});

test('health, metrics and status reflect the requests made', async () => {
  const h = await fetch(server.base + '/health');
  assert.equal(h.status, 200);
  const before = await getText(server.base, '/metrics');
  const gen0 = metric(before.text, 'tandem_generation_tokens_total');
  const stop0 = metric(before.text, 'tandem_requests_total', 'status="length"');
  await client.completions.create({ model: modelId, prompt: 'Blessed', max_tokens: 5, temperature: 0, ignore_eos: true });
  // The engine may update its counters just after the last event reaches us.
  const m = await eventually(async () => {
    const r = await getText(server.base, '/metrics');
    return metric(r.text, 'tandem_running_sequences') === 0 &&
      metric(r.text, 'tandem_requests_total', 'status="length"') - stop0 === 1 ? r : null;
  }, 5000, 'metrics to settle');
  assert.equal(m.status, 200);
  assert.equal(metric(m.text, 'tandem_generation_tokens_total') - gen0, 5);
  assert.equal(metric(m.text, 'tandem_requests_total', 'status="length"') - stop0, 1);
  assert.ok(metric(m.text, 'tandem_time_to_first_token_seconds_count') >= 1);
  assert.ok(metric(m.text, 'tandem_http_responses_total', 'code="200"') >= 1);
  assert.equal(metric(m.text, 'tandem_running_sequences'), 0);
  const s = JSON.parse((await getText(server.base, '/v1/status')).text);
  assert.equal(s.model.id, modelId);
  assert.equal(s.context_window, 512);
  assert.equal(s.batch.batch_size, 4);
  assert.equal(s.queue.max_queued_requests, 16);
  assert.ok(s.host.cpu_count >= 1 && s.host.process_rss_bytes > 0 && s.host.load_average.length === 3);
  assert.ok(s.uptime_s > 0);
});

test('CORS preflight and headers', async () => {
  const r = await fetch(server.base + '/v1/chat/completions', {
    method: 'OPTIONS', headers: { Origin: 'http://example.test', 'Access-Control-Request-Method': 'POST' },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('access-control-allow-origin'), '*');
  assert.match(r.headers.get('access-control-allow-headers'), /Authorization/);
  const g = await fetch(server.base + '/v1/models', { headers: authHeaders() });
  assert.equal(g.headers.get('access-control-allow-origin'), '*');
});
