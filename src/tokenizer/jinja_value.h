// The value type of the chat template interpreter. It follows the reference
// renderer's model: undefined and none are distinct, integers and floats are
// distinct, lists and dicts are shared (a namespace is the only mutable
// container, as in the sandboxed environment chat templates run in).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace tandem::jinja {

class Value;
class Interpreter;
struct SourceLoc {
  int line = 0;
  int column = 0;
};

using Array = std::vector<Value>;

constexpr uint32_t kMaxValueDepth = 512;

// An insertion-ordered string-keyed map. Chat template dicts are small (message
// fields, JSON schema nodes), so a linear scan beats hashing here.
struct Object {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

// Arguments of a call: positional then keyword, in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* kw(const std::string& name) const;
};

// Something a template can call: a macro, a global function, a bound method.
class Callable {
 public:
  virtual ~Callable() = default;
  virtual Value call(Interpreter& interp, const CallArgs& args, SourceLoc loc) const = 0;
  virtual std::string name() const = 0;
};

class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object, Namespace, Function };

  Value() = default;  // undefined
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value array(Array items);
  static Value object(Object obj);
  static Value namespace_(Object obj);
  static Value function(std::shared_ptr<const Callable> fn);
  // Converts a JSON document. Integral floats become integers, as the
  // reference renderer's number model does.
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_namespace() const { return kind_ == Kind::Namespace; }
  bool is_function() const { return kind_ == Kind::Function; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return i_; }
  double as_float() const { return f_; }
  // Int, Float or Bool as a double. PRECONDITIONS: is_number() or is_bool().
  double as_double() const;
  const std::string& as_string() const { return s_; }
  const Array& as_array() const { return *a_; }
  const Object& as_object() const { return *o_; }
  Object& namespace_object() const { return *o_; }
  const Callable& as_function() const { return *fn_; }
  const std::shared_ptr<const Callable>& function_ptr() const { return fn_; }

  // Nesting depth of lists and dicts (a scalar is 0). Building a value deeper
  // than kMaxValueDepth throws, so that printing, comparing and freeing it
  // cannot overflow the stack.
  uint32_t depth() const { return depth_; }
  // Whether a namespace occurs in this value (a namespace may not be stored
  // in a namespace: that is the only way to build a reference cycle).
  bool contains_namespace() const;

  // Python-style truthiness ("" / 0 / empty containers / none / undefined are false).
  bool truthy() const;
  // The name of the kind, for error messages ("string", "list", ...).
  const char* type_name() const;

 private:
  Kind kind_ = Kind::Undefined;
  uint32_t depth_ = 0;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0.0;
  std::string s_;
  std::shared_ptr<const Array> a_;
  std::shared_ptr<Object> o_;  // mutable only through a namespace
  std::shared_ptr<const Callable> fn_;
};

// Deep equality as `==` uses it: numbers and booleans compare by value,
// undefined equals none (as the reference renderer does), containers compare
// element-wise, functions by identity.
bool values_equal(const Value& a, const Value& b);

// How `{{ v }}` prints v: none and undefined print nothing, booleans print
// true/false, floats keep a ".0", containers print as JSON.
std::string to_output(const Value& v);

// JavaScript's Number#toString for a double (shortest round-trip digits).
std::string js_number(double d);
// How the reference prints a float value ("2.0", "0.1", "1e+21").
std::string float_to_output(double d);

struct JsonFormat {
  int indent = -1;  // < 0: one line
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_separator;
  std::string key_separator;
};
// Serializes as the `tojson` filter does. Throws tandem::Error for functions.
std::string to_json(const Value& v, const JsonFormat& format);
// A JSON string literal with the reference's escaping.
std::string json_quote(const std::string& s, bool ensure_ascii);

}  // namespace tandem::jinja
