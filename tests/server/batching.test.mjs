// Batching is invisible to answers: with temperature 0, 16 concurrent
// requests return exactly the tokens each returns alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, postJson } from './harness.mjs';

let server;
before(async () => { server = await startServer({ batch: 8, queue: 32 }); });
after(async () => { assert.equal((await server.stop()).code, 0); });

const PROMPTS = [
  'In the beginning', 'And it came to pass', 'Blessed are the meek', 'The LORD is my shepherd',
  'You will meet a tall', 'A fortune', 'Verily I say unto you', 'Love is patient',
  'He that hath ears', 'Your lucky number is', 'And God said', 'Honour thy father',
  'Q: What is', 'A penny saved', 'The early bird', 'Thou shalt not',
];

async function complete(prompt, i) {
  // Different lengths, so sequences join and leave the batch at different steps.
  const r = await postJson(server.base, '/v1/completions',
    { prompt, max_tokens: 8 + (i % 5) * 3, temperature: 0, ignore_eos: true, logprobs: 0 });
  assert.equal(r.status, 200, r.text);
  return { text: r.json.choices[0].text, tokens: r.json.choices[0].logprobs.tokens };
}

test('16 concurrent greedy requests equal their solo runs', async () => {
  const solo = [];
  for (let i = 0; i < PROMPTS.length; i++) solo.push(await complete(PROMPTS[i], i));
  const together = await Promise.all(PROMPTS.map((p, i) => complete(p, i)));
  for (let i = 0; i < PROMPTS.length; i++) {
    assert.deepEqual(together[i].tokens, solo[i].tokens, `prompt ${i}: ${PROMPTS[i]}`);
    assert.equal(together[i].text, solo[i].text);
  }
});
