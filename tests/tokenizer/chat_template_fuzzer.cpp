// libFuzzer target (TANDEM_FUZZ=ON, clang): any bytes as a template, rendered
// with a small conversation. Parse and render either succeed or throw
// tandem::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem::jinja;
  std::string source(reinterpret_cast<const char*>(data), size);
  try {
    Program program = parse(source);
    RenderOptions options;
    options.limits.max_steps = 200000;
    options.limits.max_output_bytes = 1 << 20;
    options.limits.max_range = 10000;
    Interpreter interp(program, options);
    Object vars;
    vars.set("messages", Value::from_json(nlohmann::json::parse(
                             R"([{"role":"system","content":"s"},{"role":"user","content":"hi"},)"
                             R"({"role":"assistant","content":"<think>r</think>a","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]}])")));
    vars.set("add_generation_prompt", Value::boolean(true));
    vars.set("bos_token", Value::string("<s>"));
    interp.render(vars);
  } catch (const tandem::Error&) {
  }
  return 0;
}
