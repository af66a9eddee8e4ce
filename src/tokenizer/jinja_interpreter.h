// Renders a parsed chat template. Each render gets its own Interpreter, so a
// template object can be shared between threads.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace tandem::jinja {

// Bounds that keep a runaway or hostile template from hanging the server or
// exhausting memory. Exceeding one is a tandem::Error naming the limit.
struct RenderLimits {
  size_t max_output_bytes = 64u << 20;  // any one string the template builds
  int max_call_depth = 64;              // nested macro calls
  uint64_t max_steps = 20'000'000;      // evaluated nodes + loop iterations
  size_t max_range = 1'000'000;         // elements of one range()
};

struct RenderOptions {
  RenderLimits limits;
  // The clock strftime_now() reads. Tests pin it; the default is the system clock.
  std::function<std::chrono::system_clock::time_point()> now;
};

class Interpreter {
 public:
  // PRECONDITIONS: `program` outlives the Interpreter.
  Interpreter(const Program& program, RenderOptions options);

  // Renders with `variables` (an Object: messages, tools, bos_token, ...)
  // as the global context.
  std::string render(const Object& variables);

  // ---- used by built-in filters and functions ----
  const RenderLimits& limits() const { return options_.limits; }
  std::chrono::system_clock::time_point now() const;
  void check_size(size_t bytes, SourceLoc loc) const;
  void step(SourceLoc loc);
  [[noreturn]] void fail(SourceLoc loc, const std::string& message) const;
  // Calls a callable value (macro, builtin) with `args`.
  Value call(const Value& fn, const CallArgs& args, SourceLoc loc);

  struct Scope;
  struct MacroCallable;

 private:
  enum class Flow { Normal, Break, Continue };

  Flow exec_block(const std::vector<NodePtr>& body, Scope& scope, std::string& out);
  Flow exec(const Node& node, Scope& scope, std::string& out);
  void exec_for(const Node& node, Scope& scope, std::string& out);
  void exec_set(const Node& node, Scope& scope, std::string& out);
  Value eval(const Node& node, Scope& scope);
  Value eval_binary(const Node& node, const Value& left, const Value& right);
  bool compare(const std::string& op, const Value& left, const Value& right, SourceLoc loc);
  Value eval_attr(const Value& object, const std::string& name);
  Value eval_index(const Value& object, const Value& key, SourceLoc loc);
  Value eval_slice(const Node& node, Scope& scope);
  CallArgs eval_args(const Node& node, size_t first_arg, Scope& scope);
  void append(std::string& out, const std::string& text, SourceLoc loc) const;

  friend struct MacroCallable;
  const Program& program_;
  RenderOptions options_;
  Scope* globals_ = nullptr;
  int call_depth_ = 0;
  uint64_t steps_ = 0;
};

}  // namespace tandem::jinja
