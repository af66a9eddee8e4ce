#include "tokenizer/jinja_interpreter.h"

#include <cmath>
#include <limits>

#include "common/error.h"
#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_lexer.h"
#include "tokenizer/jinja_text.h"

namespace tandem::jinja {

// A variable scope. The template body, each for loop, each macro call and
// each call block get one; `set` writes into the innermost.
struct Interpreter::Scope {
  Scope* parent = nullptr;
  Object vars;

  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent)
      if (const Value* v = s->vars.find(name)) return v;
    return nullptr;
  }
};

namespace {

// Python's floor division and modulo for integers.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t floor_mod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

std::string describe_callee(const Node& callee) {
  if (callee.kind == NodeKind::Identifier) return "'" + callee.name + "'";
  if (callee.kind == NodeKind::Attr) return "'" + callee.name + "'";
  return "the expression";
}

}  // namespace

// A macro defined with {% macro %}. Its body sees its parameters and the
// template's global scope.
struct Interpreter::MacroCallable : Callable {
  const Node* node;
  Scope* globals;
  MacroCallable(const Node* n, Scope* g) : node(n), globals(g) {}
  std::string name() const override { return node->name; }
  Value call(Interpreter& interp, const CallArgs& args, SourceLoc loc) const override {
    return invoke(interp, args, loc, globals, nullptr);
  }
  // Binds parameters in a fresh scope under `parent` and renders the body.
  Value invoke(Interpreter& interp, const CallArgs& args, SourceLoc loc, Scope* parent, const Value* caller) const {
    if (interp.call_depth_ >= interp.options_.limits.max_call_depth)
      interp.fail(loc, "macro calls nest deeper than " + std::to_string(interp.options_.limits.max_call_depth) +
                           " levels (runaway recursion?)");
    Scope scope;
    scope.parent = parent;
    const size_t n_params = node->names.size();
    Array varargs;
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < n_params) {
        scope.vars.set(node->names[i], args.positional[i]);
      } else {
        varargs.push_back(args.positional[i]);
      }
    }
    Object kwargs;
    for (const auto& [key, value] : args.keyword) {
      bool is_param = false;
      for (size_t i = 0; i < n_params; ++i) {
        if (node->names[i] == key) {
          if (i < args.positional.size()) interp.fail(loc, "macro '" + name() + "' got two values for '" + key + "'");
          scope.vars.set(key, value);
          is_param = true;
        }
      }
      if (!is_param) kwargs.set(key, value);
    }
    for (size_t i = 0; i < n_params; ++i) {
      if (scope.vars.find(node->names[i])) continue;
      scope.vars.set(node->names[i], Value());  // bound first: defaults never see outer names
    }
    ++interp.call_depth_;
    struct DepthRestore {
      int& d;
      ~DepthRestore() { --d; }
    } restore{interp.call_depth_};
    for (size_t i = 0; i < n_params; ++i) {
      bool given = i < args.positional.size() || args.kw(node->names[i]);
      if (!given && node->defaults[i]) scope.vars.set(node->names[i], interp.eval(*node->defaults[i], scope));
    }
    auto reads = [&](const char* special) {
      for (const auto& o : node->ops)
        if (o == special) return true;
      return false;
    };
    if (!varargs.empty() && !reads("varargs"))
      interp.fail(loc, "macro '" + name() + "' takes at most " + std::to_string(n_params) + " argument(s), got " +
                           std::to_string(args.positional.size()));
    if (!kwargs.entries.empty() && !reads("kwargs"))
      interp.fail(loc, "macro '" + name() + "' has no parameter '" + kwargs.entries.front().first + "'");
    if (reads("varargs")) scope.vars.set("varargs", Value::array(std::move(varargs)));
    if (reads("kwargs")) scope.vars.set("kwargs", Value::object(std::move(kwargs)));
    if (caller) scope.vars.set("caller", *caller);
    std::string out;
    interp.exec_block(node->body, scope, out);
    return Value::string(std::move(out));
  }
};

namespace {

// The `caller` of a {% call %} block: renders the block's body. It stays
// callable only while the block runs (its scope lives on the stack).
struct CallerCallable : Callable {
  std::shared_ptr<bool> alive;
  std::function<Value(const CallArgs&, SourceLoc)> run;
  std::string name() const override { return "caller"; }
  Value call(Interpreter& interp, const CallArgs& args, SourceLoc loc) const override {
    if (!*alive) interp.fail(loc, "'caller' used after its call block ended");
    return run(args, loc);
  }
};

}  // namespace

Interpreter::Interpreter(const Program& program, RenderOptions options)
    : program_(program), options_(std::move(options)) {}

std::chrono::system_clock::time_point Interpreter::now() const {
  return options_.now ? options_.now() : std::chrono::system_clock::now();
}

void Interpreter::fail(SourceLoc loc, const std::string& message) const {
  throw Error(format_loc(loc) + ": " + message);
}

void Interpreter::check_size(size_t bytes, SourceLoc loc) const {
  if (bytes > options_.limits.max_output_bytes)
    fail(loc, "template output exceeds " + std::to_string(options_.limits.max_output_bytes) + " bytes");
}

void Interpreter::step(SourceLoc loc) {
  if (++steps_ > options_.limits.max_steps)
    fail(loc, "template exceeded " + std::to_string(options_.limits.max_steps) +
                  " evaluation steps (runaway loop?)");
}

void Interpreter::append(std::string& out, const std::string& text, SourceLoc loc) const {
  check_size(out.size() + text.size(), loc);
  out += text;
}

std::string Interpreter::render(const Object& variables) {
  Scope globals;
  install_globals(globals.vars);
  for (const auto& [k, v] : variables.entries) globals.vars.set(k, v);
  globals_ = &globals;
  steps_ = 0;
  call_depth_ = 0;
  std::string out;
  exec_block(program_.body, globals, out);
  globals_ = nullptr;
  return out;
}

Interpreter::Flow Interpreter::exec_block(const std::vector<NodePtr>& body, Scope& scope, std::string& out) {
  for (const auto& node : body) {
    Flow f = exec(*node, scope, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Node& node, Scope& scope, std::string& out) {
  step(node.loc);
  switch (node.kind) {
    case NodeKind::Text:
      append(out, node.name, node.loc);
      return Flow::Normal;
    case NodeKind::Output: {
      Value v = eval(*node.children[0], scope);
      if (v.is_function()) fail(node.loc, "cannot print function '" + v.as_function().name() + "'; call it with ()");
      append(out, to_output(v), node.loc);
      return Flow::Normal;
    }
    case NodeKind::If:
      return exec_block(eval(*node.children[0], scope).truthy() ? node.body : node.else_body, scope, out);
    case NodeKind::For:
      exec_for(node, scope, out);
      return Flow::Normal;
    case NodeKind::SetVar:
    case NodeKind::SetAttr:
    case NodeKind::SetBlock:
      exec_set(node, scope, out);
      return Flow::Normal;
    case NodeKind::Macro:
      scope.vars.set(node.name, Value::function(std::make_shared<MacroCallable>(&node, globals_)));
      return Flow::Normal;
    case NodeKind::CallBlock: {
      const Node& call = *node.children[0];
      Value fn = eval(*call.children[0], scope);
      CallArgs args = eval_args(call, 1, scope);
      auto alive = std::make_shared<bool>(true);
      auto caller = std::make_shared<CallerCallable>();
      caller->alive = alive;
      caller->run = [this, &node, &scope](const CallArgs& a, SourceLoc loc) {
        MacroCallable as_macro(&node, globals_);
        return as_macro.invoke(*this, a, loc, &scope, nullptr);
      };
      Value caller_value = Value::function(caller);
      Value result;
      struct Expire {
        std::shared_ptr<bool> a;
        ~Expire() { *a = false; }
      } expire{alive};
      if (!fn.is_function()) fail(call.loc, describe_callee(*call.children[0]) + " is not a macro");
      if (auto* macro = dynamic_cast<const MacroCallable*>(&fn.as_function())) {
        result = macro->invoke(*this, args, call.loc, globals_, &caller_value);
      } else {
        fail(call.loc, "{% call %} needs a macro, not " + describe_callee(*call.children[0]));
      }
      append(out, to_output(result), node.loc);
      return Flow::Normal;
    }
    case NodeKind::FilterBlock: {
      std::string body;
      exec_block(node.body, scope, body);
      // Apply the filter chain; the innermost Filter node has a null operand.
      std::vector<const Node*> chain;
      for (const Node* f = node.children[0].get(); f; f = f->children[0].get()) chain.push_back(f);
      Value v = Value::string(std::move(body));
      for (auto it = chain.rbegin(); it != chain.rend(); ++it)
        v = apply_filter(*this, (*it)->name, v, eval_args(**it, 1, scope), (*it)->loc);
      append(out, to_output(v), node.loc);
      return Flow::Normal;
    }
    case NodeKind::Break:
      return Flow::Break;
    case NodeKind::Continue:
      return Flow::Continue;
    default:
      fail(node.loc, "internal error: expression node in statement position");
  }
}

void Interpreter::exec_for(const Node& node, Scope& scope, std::string& out) {
  Value iterable = eval(*node.children[0], scope);
  Array source;
  switch (iterable.kind()) {
    case Value::Kind::Array:
      source = iterable.as_array();
      break;
    case Value::Kind::Object:
      for (const auto& e : iterable.as_object().entries) source.push_back(Value::string(e.first));
      break;
    case Value::Kind::String:
      for (auto& c : utf8_chars(iterable.as_string())) source.push_back(Value::string(std::move(c)));
      break;
    case Value::Kind::Undefined:
      break;  // an undefined value iterates as empty, as in Jinja
    default:
      fail(node.children[0]->loc, std::string("cannot loop over a value of type ") + iterable.type_name());
  }
  Scope loop_scope;
  loop_scope.parent = &scope;
  auto bind = [&](const Value& item) {
    if (node.names.size() == 1) {
      loop_scope.vars.set(node.names[0], item);
      return;
    }
    if (!item.is_array() || item.as_array().size() != node.names.size())
      fail(node.loc, "cannot unpack " + std::string(item.type_name()) + " into " + std::to_string(node.names.size()) +
                         " loop variables");
    for (size_t i = 0; i < node.names.size(); ++i) loop_scope.vars.set(node.names[i], item.as_array()[i]);
  };
  Array items;
  if (node.children[1]) {
    for (const Value& item : source) {
      step(node.loc);
      bind(item);
      if (eval(*node.children[1], loop_scope).truthy()) items.push_back(item);
    }
  } else {
    items = std::move(source);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  bool iterated = false;
  for (int64_t i = 0; i < n; ++i) {
    step(node.loc);
    Object loop;
    loop.entries.reserve(9);
    loop.entries.emplace_back("index", Value::integer(i + 1));
    loop.entries.emplace_back("index0", Value::integer(i));
    loop.entries.emplace_back("revindex", Value::integer(n - i));
    loop.entries.emplace_back("revindex0", Value::integer(n - i - 1));
    loop.entries.emplace_back("first", Value::boolean(i == 0));
    loop.entries.emplace_back("last", Value::boolean(i == n - 1));
    loop.entries.emplace_back("length", Value::integer(n));
    loop.entries.emplace_back("previtem", i > 0 ? items[i - 1] : Value());
    loop.entries.emplace_back("nextitem", i + 1 < n ? items[i + 1] : Value());
    loop_scope.vars.set("loop", Value::object(std::move(loop)));
    bind(items[i]);
    iterated = true;
    Flow f = exec_block(node.body, loop_scope, out);
    if (f == Flow::Break) break;
  }
  if (!iterated) exec_block(node.else_body, loop_scope, out);
}

void Interpreter::exec_set(const Node& node, Scope& scope, std::string& out) {
  if (node.kind == NodeKind::SetBlock) {
    std::string body;
    exec_block(node.body, scope, body);
    scope.vars.set(node.names[0], Value::string(std::move(body)));
    return;
  }
  if (node.kind == NodeKind::SetAttr) {
    Value target = eval(*node.children[0], scope);
    if (!target.is_namespace())
      fail(node.loc, "cannot set attribute '" + node.name + "' on a " + target.type_name() +
                         "; only a namespace() can be assigned to");
    Value v = eval(*node.children[1], scope);
    if (v.contains_namespace())
      fail(node.loc, "cannot store a namespace inside namespace attribute '" + node.name + "'");
    target.namespace_object().set(node.name, std::move(v));
    return;
  }
  Value v = eval(*node.children[0], scope);
  if (node.names.size() == 1) {
    scope.vars.set(node.names[0], std::move(v));
    return;
  }
  if (!v.is_array() || v.as_array().size() != node.names.size())
    fail(node.loc, "cannot unpack " + std::string(v.type_name()) + " into " + std::to_string(node.names.size()) +
                       " variables");
  for (size_t i = 0; i < node.names.size(); ++i) scope.vars.set(node.names[i], v.as_array()[i]);
}

CallArgs Interpreter::eval_args(const Node& node, size_t first_arg, Scope& scope) {
  CallArgs args;
  for (size_t i = first_arg; i < node.children.size(); ++i) args.positional.push_back(eval(*node.children[i], scope));
  for (const auto& [k, v] : node.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
  return args;
}

Value Interpreter::call(const Value& fn, const CallArgs& args, SourceLoc loc) {
  if (!fn.is_function()) fail(loc, std::string("cannot call a value of type ") + fn.type_name());
  step(loc);
  return fn.as_function().call(*this, args, loc);
}

Value Interpreter::eval_attr(const Value& object, const std::string& name) {
  if (object.is_object()) {
    if (const Value* v = object.as_object().find(name)) return *v;
    return lookup_method(object, name);
  }
  if (object.is_namespace()) {
    if (const Value* v = object.namespace_object().find(name)) return *v;
    return Value();
  }
  if (object.is_string()) return lookup_method(object, name);
  return Value();
}

Value Interpreter::eval_index(const Value& object, const Value& key, SourceLoc loc) {
  if (key.is_string()) return eval_attr(object, key.as_string());
  if (!key.is_int()) {
    if (key.is_undefined() || key.is_none()) return Value();
    if (object.is_array() || object.is_string())
      fail(loc, std::string("list and string indices must be integers, not ") + key.type_name());
    return Value();
  }
  int64_t i = key.as_int();
  if (object.is_array()) {
    const Array& a = object.as_array();
    int64_t n = static_cast<int64_t>(a.size());
    if (i < 0) i += n;
    return (i >= 0 && i < n) ? a[static_cast<size_t>(i)] : Value();
  }
  if (object.is_string()) {
    std::vector<std::string> chars = utf8_chars(object.as_string());
    int64_t n = static_cast<int64_t>(chars.size());
    if (i < 0) i += n;
    return (i >= 0 && i < n) ? Value::string(chars[static_cast<size_t>(i)]) : Value();
  }
  return Value();
}

Value Interpreter::eval_slice(const Node& node, Scope& scope) {
  Value object = eval(*node.children[0], scope);
  int64_t parts[3] = {0, 0, 1};
  bool given[3] = {false, false, false};
  for (int k = 0; k < 3; ++k) {
    if (!node.children[k + 1]) continue;
    Value v = eval(*node.children[k + 1], scope);
    if (v.is_undefined() || v.is_none()) continue;
    if (!v.is_int()) fail(node.children[k + 1]->loc, std::string("slice bounds must be integers, not ") + v.type_name());
    parts[k] = v.as_int();
    given[k] = true;
  }
  if (parts[2] == 0) fail(node.loc, "slice step cannot be zero");
  std::vector<std::string> chars;
  int64_t n = 0;
  if (object.is_array()) {
    n = static_cast<int64_t>(object.as_array().size());
  } else if (object.is_string()) {
    chars = utf8_chars(object.as_string());
    n = static_cast<int64_t>(chars.size());
  } else {
    fail(node.loc, std::string("cannot slice a value of type ") + object.type_name());
  }
  // Python's slice index normalisation.
  const int64_t step_v = parts[2];
  int64_t start, stop;
  auto clamp = [&](int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); };
  if (step_v > 0) {
    start = given[0] ? (parts[0] < 0 ? clamp(parts[0] + n, 0, n) : clamp(parts[0], 0, n)) : 0;
    stop = given[1] ? (parts[1] < 0 ? clamp(parts[1] + n, 0, n) : clamp(parts[1], 0, n)) : n;
  } else {
    start = given[0] ? (parts[0] < 0 ? clamp(parts[0] + n, -1, n - 1) : clamp(parts[0], -1, n - 1)) : n - 1;
    stop = given[1] ? (parts[1] < 0 ? clamp(parts[1] + n, -1, n - 1) : clamp(parts[1], -1, n - 1)) : -1;
  }
  Array out_items;
  std::string out_str;
  for (int64_t i = start; step_v > 0 ? i < stop : i > stop; i += step_v) {
    if (object.is_array()) {
      out_items.push_back(object.as_array()[static_cast<size_t>(i)]);
    } else {
      out_str += chars[static_cast<size_t>(i)];
    }
  }
  return object.is_array() ? Value::array(std::move(out_items)) : Value::string(std::move(out_str));
}

namespace {
// How `+` and `~` turn a value into text: JavaScript's conversion, which the
// reference uses (integral floats print without ".0", booleans as true/false).
bool concat_text(const Value& v, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::String: *out = v.as_string(); return true;
    case Value::Kind::Int: *out = std::to_string(v.as_int()); return true;
    case Value::Kind::Float: *out = js_number(v.as_float()); return true;
    case Value::Kind::Bool: *out = v.as_bool() ? "true" : "false"; return true;
    default: return false;
  }
}
}  // namespace

Value Interpreter::eval_binary(const Node& node, const Value& l, const Value& r) {
  const std::string& op = node.name;
  auto unsupported = [&]() -> Value {
    fail(node.loc, "unsupported operand types for '" + op + "': " + l.type_name() + " and " + r.type_name());
  };
  if (l.is_undefined() || r.is_undefined() || l.is_none() || r.is_none()) {
    const Value& bad = (l.is_undefined() || l.is_none()) ? l : r;
    fail(node.loc, std::string("cannot apply '") + op + "' to " +
                       (bad.is_undefined() ? "an undefined value" : "none"));
  }
  if (op == "~") {
    std::string a, b;
    if (!concat_text(l, &a) || !concat_text(r, &b)) unsupported();
    check_size(a.size() + b.size(), node.loc);
    return Value::string(a + b);
  }
  const bool l_num = l.is_number() || l.is_bool();
  const bool r_num = r.is_number() || r.is_bool();
  if (l_num && r_num && !(l.is_bool() && r.is_bool() && op != "**")) {
    const bool ints = (l.is_int() || l.is_bool()) && (r.is_int() || r.is_bool());
    const int64_t a = l.is_bool() ? l.as_bool() : l.as_int();
    const int64_t b = r.is_bool() ? r.as_bool() : r.as_int();
    const double x = l.as_double(), y = r.as_double();
    auto overflow = [&]() -> Value { fail(node.loc, "integer overflow in '" + op + "'"); };
    if (op == "+" || op == "-" || op == "*") {
      if (ints) {
        int64_t res = 0;
        bool of = op == "+" ? __builtin_add_overflow(a, b, &res)
                  : op == "-" ? __builtin_sub_overflow(a, b, &res)
                              : __builtin_mul_overflow(a, b, &res);
        if (of) return overflow();
        return Value::integer(res);
      }
      return Value::floating(op == "+" ? x + y : op == "-" ? x - y : x * y);
    }
    if (op == "/") {
      if (y == 0) fail(node.loc, "division by zero");
      return Value::floating(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) fail(node.loc, op == "//" ? "division by zero" : "modulo by zero");
      if (ints) {
        if (a == std::numeric_limits<int64_t>::min() && b == -1) return overflow();
        return Value::integer(op == "//" ? floor_div(a, b) : floor_mod(a, b));
      }
      if (op == "//") return Value::floating(std::floor(x / y));
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::floating(m);
    }
    if (op == "**") {
      if (x == 0 && y < 0) fail(node.loc, "0 cannot be raised to a negative power");
      double res = std::pow(x, y);
      if (!std::isfinite(res)) fail(node.loc, "'**' result is not a finite number");
      if (ints && b >= 0) {
        if (a == 0) return Value::integer(b == 0 ? 1 : 0);
        if (a == 1) return Value::integer(1);
        if (a == -1) return Value::integer(b % 2 == 0 ? 1 : -1);
        int64_t acc = 1;  // |a| >= 2, so this overflows within 63 steps
        for (int64_t k = 0; k < b; ++k)
          if (__builtin_mul_overflow(acc, a, &acc)) return overflow();
        return Value::integer(acc);
      }
      return Value::floating(res);
    }
    return unsupported();
  }
  if (op == "+") {
    if (l.is_array() && r.is_array()) {
      Array out = l.as_array();
      out.insert(out.end(), r.as_array().begin(), r.as_array().end());
      return Value::array(std::move(out));
    }
    if (l.is_string() || r.is_string()) {
      std::string a, b;
      if (!concat_text(l, &a) || !concat_text(r, &b)) return unsupported();
      check_size(a.size() + b.size(), node.loc);
      return Value::string(a + b);
    }
  }
  if (op == "*" && ((l.is_string() && r.is_int()) || (l.is_int() && r.is_string()))) {
    const std::string& s = l.is_string() ? l.as_string() : r.as_string();
    int64_t times = l.is_int() ? l.as_int() : r.as_int();
    if (times <= 0) return Value::string("");
    if (s.size() > 0 && static_cast<uint64_t>(times) > limits().max_output_bytes / s.size()) check_size(SIZE_MAX, node.loc);
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t k = 0; k < times; ++k) out += s;
    return Value::string(std::move(out));
  }
  if (op == "%" && l.is_string()) fail(node.loc, "unsupported construct: string formatting with '%'");
  return unsupported();
}

bool Interpreter::compare(const std::string& op, const Value& l, const Value& r, SourceLoc loc) {
  if (op == "==") return values_equal(l, r);
  if (op == "!=") return !values_equal(l, r);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (r.is_array()) {
      for (const Value& x : r.as_array())
        if (values_equal(l, x)) {
          found = true;
          break;
        }
    } else if (r.is_string()) {
      if (!l.is_string()) fail(loc, std::string("'in <string>' needs a string on the left, not ") + l.type_name());
      found = r.as_string().find(l.as_string()) != std::string::npos;
    } else if (r.is_object()) {
      found = l.is_string() && r.as_object().find(l.as_string()) != nullptr;
    } else if (r.is_undefined()) {
      found = false;
    } else {
      fail(loc, std::string("'in' needs a list, string or dict on the right, not ") + r.type_name());
    }
    return op == "in" ? found : !found;
  }
  int c = 0;
  if ((l.is_number() || l.is_bool()) && (r.is_number() || r.is_bool())) {
    if (l.is_int() && r.is_int()) {
      c = l.as_int() < r.as_int() ? -1 : (l.as_int() > r.as_int() ? 1 : 0);
    } else {
      double x = l.as_double(), y = r.as_double();
      if (std::isnan(x) || std::isnan(y)) return false;
      c = x < y ? -1 : (x > y ? 1 : 0);
    }
  } else if (l.is_string() && r.is_string()) {
    int k = l.as_string().compare(r.as_string());
    c = k < 0 ? -1 : (k > 0 ? 1 : 0);
  } else {
    fail(loc, "cannot compare " + std::string(l.type_name()) + " and " + r.type_name() + " with '" + op + "'");
  }
  if (op == "<") return c < 0;
  if (op == ">") return c > 0;
  if (op == "<=") return c <= 0;
  return c >= 0;
}

Value Interpreter::eval(const Node& node, Scope& scope) {
  step(node.loc);
  switch (node.kind) {
    case NodeKind::Literal:
      return node.literal;
    case NodeKind::Identifier: {
      const Value* v = scope.lookup(node.name);
      return v ? *v : Value();
    }
    case NodeKind::List:
    case NodeKind::Tuple: {
      Array items;
      items.reserve(node.children.size());
      for (const auto& c : node.children) items.push_back(eval(*c, scope));
      return Value::array(std::move(items));
    }
    case NodeKind::Dict: {
      Object obj;
      for (size_t i = 0; i + 1 < node.children.size(); i += 2) {
        Value k = eval(*node.children[i], scope);
        if (!k.is_string()) fail(node.children[i]->loc, std::string("dict keys must be strings, not ") + k.type_name());
        obj.set(k.as_string(), eval(*node.children[i + 1], scope));
      }
      return Value::object(std::move(obj));
    }
    case NodeKind::Attr:
      return eval_attr(eval(*node.children[0], scope), node.name);
    case NodeKind::Index: {
      Value object = eval(*node.children[0], scope);
      return eval_index(object, eval(*node.children[1], scope), node.loc);
    }
    case NodeKind::Slice:
      return eval_slice(node, scope);
    case NodeKind::Call: {
      const Node& callee = *node.children[0];
      Value fn = eval(callee, scope);
      if (!fn.is_function()) {
        if (fn.is_undefined()) fail(node.loc, describe_callee(callee) + " is undefined; it cannot be called");
        fail(node.loc, describe_callee(callee) + " is a " + fn.type_name() + ", not a function");
      }
      CallArgs args = eval_args(node, 1, scope);
      return call(fn, args, node.loc);
    }
    case NodeKind::Filter: {
      Value operand = eval(*node.children[0], scope);
      return apply_filter(*this, node.name, operand, eval_args(node, 1, scope), node.loc);
    }
    case NodeKind::Test: {
      Value operand = eval(*node.children[0], scope);
      bool r = apply_test(*this, node.name, operand, eval_args(node, 1, scope), node.loc);
      return Value::boolean(node.negate ? !r : r);
    }
    case NodeKind::Unary: {
      Value v = eval(*node.children[0], scope);
      if (v.is_bool()) v = Value::integer(v.as_bool() ? 1 : 0);
      if (!v.is_number()) fail(node.loc, "unary '" + node.name + "' needs a number, not " + v.type_name());
      if (node.name == "+") return v;
      if (v.is_float()) return Value::floating(-v.as_float());
      if (v.as_int() == std::numeric_limits<int64_t>::min()) fail(node.loc, "integer overflow in unary '-'");
      return Value::integer(-v.as_int());
    }
    case NodeKind::Not:
      return Value::boolean(!eval(*node.children[0], scope).truthy());
    case NodeKind::Binary: {
      Value l = eval(*node.children[0], scope);
      Value r = eval(*node.children[1], scope);
      return eval_binary(node, l, r);
    }
    case NodeKind::Compare: {
      Value left = eval(*node.children[0], scope);
      for (size_t i = 0; i < node.ops.size(); ++i) {
        Value right = eval(*node.children[i + 1], scope);
        if (!compare(node.ops[i], left, right, node.loc)) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case NodeKind::And: {
      Value l = eval(*node.children[0], scope);
      return l.truthy() ? eval(*node.children[1], scope) : l;
    }
    case NodeKind::Or: {
      Value l = eval(*node.children[0], scope);
      return l.truthy() ? l : eval(*node.children[1], scope);
    }
    case NodeKind::Ternary:
      return eval(*node.children[eval(*node.children[0], scope).truthy() ? 1 : 2], scope);
    case NodeKind::Select:
      return eval(*node.children[1], scope).truthy() ? eval(*node.children[0], scope) : Value();
    default:
      fail(node.loc, "internal error: statement node in expression position");
  }
}

}  // namespace tandem::jinja
