// Mutation fuzz of the chat template parser and renderer: the real templates
// from the golden file, randomly damaged (characters and template tokens
// deleted, duplicated, swapped, inserted), must each either render or throw
// tandem::Error. A crash, a hang or any other exception fails the test.
// Fixed seed and bounded work, so it is reproducible and takes a few seconds.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "common/error.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_parser.h"

namespace {

using namespace tandem::jinja;

nlohmann::json load_goldens() {
  std::ifstream in(std::string(TANDEM_SOURCE_DIR) + "/tests/tokenizer/chat_template_goldens.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

const char* const kFragments[] = {
    "{%", "%}", "{{", "}}", "{%-", "-%}", "{{-", "-}}", "{#", "#}", "(", ")", "[", "]", "{", "}", "|", ",", ".",
    ":", "'", "\"", "\\", "~", "**", "//", "-", "+", " if ", " else ", " endif ", " for x in ", " endfor ", " in ",
    " not ", " is ", " and ", " or ", "loop", "loop.index0", "messages", "range(", "namespace(", "ns.x", " set ",
    " macro m(a, b=1) ", " endmacro ", " call m(1) ", " endcall ", "caller()", " recursive ", "|tojson(indent=2)",
    "|selectattr('role')", "|map(attribute='x')", "|join", "[::-1]", "[1:]", "raise_exception('x')", "\n", "\xC3\xA9",
    "\xF0\x9F", "9999999999999999999", "1e5", " break ", " continue ", "|int", "|length", " filter upper ", " endfilter ",
};

std::string mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int edits = 1 + static_cast<int>(pick(4));
  for (int e = 0; e < edits; ++e) {
    size_t pos = pick(s.size() + 1);
    switch (pick(6)) {
      case 0:  // delete a short range
        if (!s.empty() && pos < s.size()) s.erase(pos, 1 + pick(8));
        break;
      case 1: {  // duplicate a range
        if (pos < s.size()) {
          std::string piece = s.substr(pos, 1 + pick(40));
          s.insert(pick(s.size() + 1), piece);
        }
        break;
      }
      case 2:  // swap two characters
        if (s.size() > 1) std::swap(s[pick(s.size())], s[pick(s.size())]);
        break;
      case 3:  // insert a template token
        s.insert(pos, kFragments[pick(std::size(kFragments))]);
        break;
      case 4:  // replace a byte with a random one
        if (pos < s.size()) s[pos] = static_cast<char>(pick(256));
        break;
      default: {  // move a block of text elsewhere
        if (pos < s.size()) {
          std::string piece = s.substr(pos, 1 + pick(200));
          s.erase(pos, piece.size());
          s.insert(pick(s.size() + 1), piece);
        }
      }
    }
  }
  return s;
}

TEST(ChatTemplateFuzz, MutatedRealTemplatesRenderOrThrowTandemError) {
  const nlohmann::json goldens = load_goldens();
  std::vector<std::string> sources;
  for (const auto& [name, t] : goldens["templates"].items()) sources.push_back(t["source"]);
  ASSERT_GE(sources.size(), 6u);
  // A conversation with tools, tool calls and reasoning exercises most branches.
  nlohmann::json tools_case;
  for (const auto& c : goldens["cases"])
    if (c["name"] == "qwen3/tool_call_object+gen+tools") tools_case = c;
  ASSERT_FALSE(tools_case.is_null());
  Object vars;
  vars.set("messages", Value::from_json(tools_case["messages"]));
  vars.set("tools", Value::from_json(tools_case["tools"]));
  vars.set("add_generation_prompt", Value::boolean(true));
  vars.set("bos_token", Value::string("<s>"));
  vars.set("eos_token", Value::string("</s>"));

  RenderOptions options;
  options.limits.max_steps = 200'000;
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_range = 10'000;
  options.now = [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1795610096)); };

  std::mt19937 rng(20261125);
  // TANDEM_FUZZ_ITERATIONS raises the count for a deeper local run.
  const char* env = std::getenv("TANDEM_FUZZ_ITERATIONS");
  const int iterations = env ? std::atoi(env) : 4000;
  const auto time_budget = std::chrono::seconds(env ? 3600 : 20);
  int tried = 0, parsed = 0, rendered = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    std::string source = mutate(sources[static_cast<size_t>(i) % sources.size()], rng);
    ++tried;
    try {
      Program program = parse(source);
      ++parsed;
      Interpreter interp(program, options);
      interp.render(vars);
      ++rendered;
    } catch (const tandem::Error&) {
      // expected for most mutations
    } catch (const std::exception& e) {
      FAIL() << "iteration " << i << " threw a non-tandem exception: " << e.what() << "\ntemplate:\n" << source;
    }
    // Bounded time on slow CI machines: stop early rather than run long.
    if (std::chrono::steady_clock::now() - start > time_budget) break;
  }
  // Both outcomes must occur, or the mutations are too weak or too strong.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rendered, 100);
  std::printf("%d mutated templates: %d parsed, %d rendered\n", tried, parsed, rendered);
  RecordProperty("parsed", parsed);
  RecordProperty("rendered", rendered);
}

}  // namespace
