#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "common/error.h"

namespace tandem::jinja {

const Value* Object::find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Object::set(const std::string& key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

const Value* CallArgs::kw(const std::string& name) const {
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.b_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::Int;
  v.i_ = i;
  return v;
}
Value Value::floating(double f) {
  Value v;
  v.kind_ = Kind::Float;
  v.f_ = f;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.s_ = std::move(s);
  return v;
}
namespace {
uint32_t checked_depth(uint32_t child_max) {
  if (child_max + 1 > kMaxValueDepth)
    throw Error("chat template: a list or dict nests deeper than " + std::to_string(kMaxValueDepth) + " levels");
  return child_max + 1;
}
}  // namespace

Value Value::array(Array items) {
  Value v;
  v.kind_ = Kind::Array;
  uint32_t d = 0;
  for (const Value& x : items) d = std::max(d, x.depth_);
  v.depth_ = checked_depth(d);
  v.a_ = std::make_shared<const Array>(std::move(items));
  return v;
}
Value Value::object(Object obj) {
  Value v;
  v.kind_ = Kind::Object;
  uint32_t d = 0;
  for (const auto& e : obj.entries) d = std::max(d, e.second.depth_);
  v.depth_ = checked_depth(d);
  v.o_ = std::make_shared<Object>(std::move(obj));
  return v;
}
Value Value::namespace_(Object obj) {
  Value v;
  v.kind_ = Kind::Namespace;
  uint32_t d = 0;
  for (const auto& e : obj.entries) d = std::max(d, e.second.depth_);
  v.depth_ = checked_depth(d);
  v.o_ = std::make_shared<Object>(std::move(obj));
  return v;
}
Value Value::function(std::shared_ptr<const Callable> fn) {
  Value v;
  v.kind_ = Kind::Function;
  v.fn_ = std::move(fn);
  return v;
}

namespace {
template <typename Json>
Value convert(const Json& j, uint32_t depth) {
  if (depth > kMaxValueDepth)
    throw Error("chat template: input JSON nests deeper than " + std::to_string(kMaxValueDepth) + " levels");
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      auto u = j.template get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::integer(static_cast<int64_t>(u));
      return Value::floating(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float: {
      double d = j.template get<double>();
      // The reference keeps one number type and calls integral values
      // integers; do the same so that 1.0 prints as the reference prints it.
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return Value::integer(static_cast<int64_t>(d));
      return Value::floating(d);
    }
    case nlohmann::json::value_t::string:
      return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      Array items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(convert(x, depth + 1));
      return Value::array(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object obj;
      for (auto it = j.begin(); it != j.end(); ++it) obj.entries.emplace_back(it.key(), convert(it.value(), depth + 1));
      return Value::object(std::move(obj));
    }
    case nlohmann::json::value_t::binary:
      break;
  }
  throw Error("chat template: binary JSON values cannot be passed to a template");
}
}  // namespace

Value Value::from_json(const nlohmann::json& j) { return convert(j, 0); }
Value Value::from_json(const nlohmann::ordered_json& j) { return convert(j, 0); }

bool Value::contains_namespace() const {
  switch (kind_) {
    case Kind::Namespace:
      return true;
    case Kind::Array:
      for (const Value& x : *a_)
        if (x.depth_ > 0 || x.kind_ == Kind::Namespace)
          if (x.contains_namespace()) return true;
      return false;
    case Kind::Object:
      for (const auto& e : o_->entries)
        if (e.second.depth_ > 0 || e.second.kind_ == Kind::Namespace)
          if (e.second.contains_namespace()) return true;
      return false;
    default:
      return false;
  }
}

double Value::as_double() const {
  if (kind_ == Kind::Int) return static_cast<double>(i_);
  if (kind_ == Kind::Bool) return b_ ? 1.0 : 0.0;
  return f_;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return b_;
    case Kind::Int:
      return i_ != 0;
    case Kind::Float:
      return f_ != 0.0 && !std::isnan(f_);
    case Kind::String:
      return !s_.empty();
    case Kind::Array:
      return !a_->empty();
    case Kind::Object:
      return !o_->entries.empty();
    case Kind::Namespace:
    case Kind::Function:
      return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "undefined";
    case Kind::None: return "none";
    case Kind::Bool: return "boolean";
    case Kind::Int: return "integer";
    case Kind::Float: return "float";
    case Kind::String: return "string";
    case Kind::Array: return "list";
    case Kind::Object: return "dict";
    case Kind::Namespace: return "namespace";
    case Kind::Function: return "function";
  }
  return "?";
}

bool values_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  bool a_nil = a.is_none() || a.is_undefined();
  bool b_nil = b.is_none() || b.is_undefined();
  if (a_nil || b_nil) return a_nil && b_nil;
  bool a_num = a.is_number() || a.is_bool();
  bool b_num = b.is_number() || b.is_bool();
  if (a_num || b_num) {
    if (!(a_num && b_num)) return false;
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::String:
      return a.as_string() == b.as_string();
    case K::Array: {
      const Array& x = a.as_array();
      const Array& y = b.as_array();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!values_equal(x[i], y[i])) return false;
      return true;
    }
    case K::Object:
    case K::Namespace: {
      const Object& x = a.kind() == K::Object ? a.as_object() : a.namespace_object();
      const Object& y = b.kind() == K::Object ? b.as_object() : b.namespace_object();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [k, v] : x.entries) {
        const Value* w = y.find(k);
        if (!w || !values_equal(v, *w)) return false;
      }
      return true;
    }
    case K::Function:
      return a.function_ptr() == b.function_ptr();
    default:
      return false;
  }
}

std::string js_number(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  if (d == 0) return "0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci = [-]d[.ddd]e±XX: collect the digits and the decimal exponent.
  bool negative = sci[0] == '-';
  size_t p = negative ? 1 : 0;
  size_t e_pos = sci.find('e');
  std::string digits;
  for (size_t i = p; i < e_pos; ++i)
    if (sci[i] != '.') digits.push_back(sci[i]);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  int k = static_cast<int>(digits.size());
  int n = exponent + 1;  // the decimal point sits after n digits
  std::string out = negative ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(-n, '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += "e";
    out += (n - 1 >= 0) ? "+" : "-";
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string float_to_output(double d) {
  if (d == 0 && std::signbit(d)) return "-0.0";
  if (std::isfinite(d) && d == std::floor(d)) {
    if (std::fabs(d) < 1e21) {
      char buf[400];
      std::snprintf(buf, sizeof buf, "%.0f", d);
      return std::string(buf) + ".0";
    }
  }
  return js_number(d);
}

std::string json_quote(const std::string& s, bool ensure_ascii) {
  std::string out = "\"";
  static const char* hex = "0123456789abcdef";
  auto u_escape = [&](uint32_t unit) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out.push_back(hex[(unit >> shift) & 0xF]);
  };
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (c < 0x20) {
      u_escape(c);
    } else if (c < 0x7F || !ensure_ascii) {
      out.push_back(static_cast<char>(c));
    } else if (c == 0x7F) {
      u_escape(c);
    } else {
      // Decode one UTF-8 sequence; emit UTF-16 escapes like the reference.
      uint32_t cp = 0;
      size_t len = 0;
      if (c >= 0xF0 && i + 3 < s.size() + 0 && i + 3 <= s.size() - 1) {
        cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
        len = 4;
      } else if (c >= 0xE0 && i + 2 <= s.size() - 1) {
        cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
        len = 3;
      } else if (c >= 0xC0 && i + 1 <= s.size() - 1) {
        cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
        len = 2;
      } else {
        cp = 0xFFFD;
        len = 1;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        u_escape(0xD800 + (cp >> 10));
        u_escape(0xDC00 + (cp & 0x3FF));
      } else {
        u_escape(cp);
      }
      i += len - 1;
    }
  }
  out += "\"";
  return out;
}

namespace {
void json_into(std::string& out, const Value& v, const JsonFormat& f, int depth) {
  using K = Value::Kind;
  const std::string item_sep = f.has_separators ? f.item_separator : (f.indent > 0 ? "," : ", ");
  const std::string key_sep = f.has_separators ? f.key_separator : ": ";
  const bool pretty = f.indent > 0;
  const std::string unit = pretty ? std::string(f.indent, ' ') : "";
  auto pad = [&](int d) {
    std::string p = "\n";
    for (int i = 0; i < d; ++i) p += unit;
    return p;
  };
  switch (v.kind()) {
    case K::Undefined:
    case K::None:
      out += "null";
      return;
    case K::Bool:
      out += v.as_bool() ? "true" : "false";
      return;
    case K::Int:
      out += std::to_string(v.as_int());
      return;
    case K::Float:
      out += std::isfinite(v.as_float()) ? js_number(v.as_float()) : "null";
      return;
    case K::String:
      out += json_quote(v.as_string(), f.ensure_ascii);
      return;
    case K::Array: {
      const Array& a = v.as_array();
      out += "[";
      for (size_t i = 0; i < a.size(); ++i) {
        if (i > 0) out += item_sep;
        if (pretty) out += pad(depth + 1);
        json_into(out, a[i], f, depth + 1);
      }
      if (pretty && !a.empty()) out += pad(depth);
      out += "]";
      return;
    }
    case K::Object:
    case K::Namespace: {
      const Object& o = v.kind() == K::Object ? v.as_object() : v.namespace_object();
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : o.entries) entries.push_back(&e);
      if (f.sort_keys)
        std::stable_sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += "{";
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) out += item_sep;
        if (pretty) out += pad(depth + 1);
        out += json_quote(entries[i]->first, f.ensure_ascii);
        out += key_sep;
        json_into(out, entries[i]->second, f, depth + 1);
      }
      if (pretty && !entries.empty()) out += pad(depth);
      out += "}";
      return;
    }
    case K::Function:
      throw Error("chat template: cannot convert a function ('" + v.as_function().name() + "') to JSON");
  }
}
}  // namespace

std::string to_json(const Value& v, const JsonFormat& format) {
  std::string out;
  json_into(out, v, format, 0);
  return out;
}

std::string to_output(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return "";
    case Value::Kind::Bool:
      return v.as_bool() ? "true" : "false";
    case Value::Kind::Int:
      return std::to_string(v.as_int());
    case Value::Kind::Float:
      return float_to_output(v.as_float());
    case Value::Kind::String:
      return v.as_string();
    case Value::Kind::Array:
    case Value::Kind::Object:
    case Value::Kind::Namespace:
      return to_json(v, JsonFormat{});
    case Value::Kind::Function:
      return "<function " + v.as_function().name() + ">";
  }
  return "";
}

}  // namespace tandem::jinja
