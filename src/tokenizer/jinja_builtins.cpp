#include "tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <string_view>

#include "common/error.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_text.h"

namespace tandem::jinja {
namespace {

constexpr std::string_view kFilters[] = {
    "abs",      "capitalize", "center",  "count",     "d",       "default", "dictsort", "e",
    "escape",   "first",      "float",   "indent",    "int",     "items",   "join",     "last",
    "length",   "list",       "lower",   "map",       "max",     "min",     "reject",   "rejectattr",
    "replace",  "reverse",    "round",   "safe",      "select",  "selectattr", "sort",  "string",
    "sum",      "title",      "tojson",  "trim",      "unique",  "upper",   "wordcount",
};
constexpr std::string_view kTests[] = {
    "defined", "undefined", "none",  "boolean", "true",  "false", "string", "number", "integer",
    "float",   "mapping",   "iterable", "sequence", "callable", "odd", "even", "divisibleby", "equalto",
    "eq",      "sameas",    "ne",    "lt",      "gt",    "le",    "ge",     "in",     "lower", "upper",
};

const Value* arg(const CallArgs& a, size_t i, const char* name) {
  if (i < a.positional.size()) return &a.positional[i];
  return a.kw(name);
}

[[noreturn]] void fail(Interpreter& in, SourceLoc loc, const std::string& msg) { in.fail(loc, msg); }

bool arg_bool(Interpreter& in, const CallArgs& a, size_t i, const char* name, bool def, SourceLoc loc) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_undefined()) return def;
  if (!v->is_bool()) fail(in, loc, std::string("argument '") + name + "' must be a boolean");
  return v->as_bool();
}
int64_t arg_int(Interpreter& in, const CallArgs& a, size_t i, const char* name, int64_t def, SourceLoc loc) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_undefined() || v->is_none()) return def;
  if (!v->is_int()) fail(in, loc, std::string("argument '") + name + "' must be an integer");
  return v->as_int();
}
std::string arg_string(Interpreter& in, const CallArgs& a, size_t i, const char* name, const std::string& def,
                       SourceLoc loc) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_undefined()) return def;
  if (!v->is_string()) fail(in, loc, std::string("argument '") + name + "' must be a string");
  return v->as_string();
}
const std::string& need_string(Interpreter& in, const Value& v, const char* what, SourceLoc loc) {
  if (!v.is_string()) fail(in, loc, std::string(what) + " needs a string, not " + v.type_name());
  return v.as_string();
}
// Items of anything a filter may iterate: lists, dict keys, characters.
Array iterate(Interpreter& in, const Value& v, const char* what, SourceLoc loc) {
  switch (v.kind()) {
    case Value::Kind::Array:
      return v.as_array();
    case Value::Kind::Object: {
      Array keys;
      for (const auto& e : v.as_object().entries) keys.push_back(Value::string(e.first));
      return keys;
    }
    case Value::Kind::String: {
      Array chars;
      for (auto& c : utf8_chars(v.as_string())) chars.push_back(Value::string(std::move(c)));
      return chars;
    }
    case Value::Kind::Undefined:
      return {};
    default:
      fail(in, loc, std::string(what) + " cannot iterate over a " + v.type_name());
  }
}

// `item.a.b` / `item.0` as filters like map(attribute=...) read it.
Value attribute_path(const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_object() || cur.is_namespace()) {
      const Object& o = cur.is_object() ? cur.as_object() : cur.namespace_object();
      const Value* v = o.find(part);
      if (!v) return Value();
      cur = *v;
    } else if (cur.is_array()) {
      char* end = nullptr;
      long long idx = std::strtoll(part.c_str(), &end, 10);
      if (part.empty() || *end != '\0' || idx < 0 || static_cast<size_t>(idx) >= cur.as_array().size()) return Value();
      cur = cur.as_array()[static_cast<size_t>(idx)];
    } else {
      return Value();
    }
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// Ordering for sort, dictsort, min, max: numbers with numbers, strings with strings.
int order(Interpreter& in, const Value& a, const Value& b, bool case_sensitive, SourceLoc loc) {
  if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) {
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = case_sensitive ? a.as_string().compare(b.as_string())
                           : to_lower(a.as_string()).compare(to_lower(b.as_string()));
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_array() && b.is_array()) {  // lexicographic, like Python tuples (e.g. dict items)
    const Array& x = a.as_array();
    const Array& y = b.as_array();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (int c = order(in, x[i], y[i], case_sensitive, loc)) return c;
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  if ((a.is_none() && b.is_none()) || (a.is_undefined() && b.is_undefined())) return 0;
  fail(in, loc, std::string("cannot order ") + a.type_name() + " and " + b.type_name());
}

std::string text_of(const Value& v) {
  if (v.is_none()) return "None";
  return to_output(v);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// Python str.replace, including the empty-pattern case.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (count == 0) return s;
  std::string out;
  int64_t done = 0;
  if (from.empty()) {
    for (const auto& c : utf8_chars(s)) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += c;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos || (count >= 0 && done >= count)) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python str.split / str.rsplit.
Array split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right, Interpreter& in,
            SourceLoc loc) {
  std::vector<std::string> parts;
  if (!sep || sep->is_none() || sep->is_undefined()) {
    // Runs of whitespace separate; no empty strings at the ends.
    std::vector<std::pair<size_t, size_t>> words;  // [begin, end)
    size_t i = 0;
    while (i < s.size()) {
      while (size_t w = whitespace_length(s, i)) i += w;
      if (i >= s.size()) break;
      size_t b = i;
      while (i < s.size() && whitespace_length(s, i) == 0) ++i;
      words.emplace_back(b, i);
    }
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= words.size()) {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    } else if (!from_right) {
      for (size_t k = 0; k < static_cast<size_t>(maxsplit); ++k)
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
      parts.push_back(trim_whitespace(s.substr(words[maxsplit].first), false, true));
    } else {
      size_t keep = words.size() - static_cast<size_t>(maxsplit);
      parts.push_back(trim_whitespace(s.substr(0, words[keep - 1].second), true, false));
      for (size_t k = keep; k < words.size(); ++k)
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
    }
  } else {
    const std::string& d = need_string(in, *sep, "split()", loc);
    if (d.empty()) fail(in, loc, "split(): empty separator");
    std::vector<std::string> all;
    size_t pos = 0;
    while (true) {
      size_t hit = s.find(d, pos);
      if (hit == std::string::npos) break;
      all.push_back(s.substr(pos, hit - pos));
      pos = hit + d.size();
    }
    all.push_back(s.substr(pos));
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= all.size()) {
      parts = std::move(all);
    } else if (!from_right) {
      for (size_t k = 0; k < static_cast<size_t>(maxsplit); ++k) parts.push_back(all[k]);
      std::string rest = all[maxsplit];
      for (size_t k = static_cast<size_t>(maxsplit) + 1; k < all.size(); ++k) rest += d + all[k];
      parts.push_back(rest);
    } else {
      size_t keep = all.size() - static_cast<size_t>(maxsplit);
      std::string head = all[0];
      for (size_t k = 1; k < keep; ++k) head += d + all[k];
      parts.push_back(head);
      for (size_t k = keep; k < all.size(); ++k) parts.push_back(all[k]);
    }
  }
  Array out;
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return out;
}

bool affix_match(Interpreter& in, const std::string& s, const Value& pattern, bool prefix, SourceLoc loc) {
  auto one = [&](const std::string& p) {
    if (p.size() > s.size()) return false;
    return prefix ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (pattern.is_string()) return one(pattern.as_string());
  if (pattern.is_array()) {
    for (const Value& p : pattern.as_array())
      if (one(need_string(in, p, prefix ? "startswith()" : "endswith()", loc))) return true;
    return false;
  }
  fail(in, loc, std::string(prefix ? "startswith()" : "endswith()") + " needs a string or a tuple of strings");
}

// A method bound to its receiver, e.g. "a,b".split.
struct BoundMethod : Callable {
  Value self;
  std::string method;
  BoundMethod(Value s, std::string m) : self(std::move(s)), method(std::move(m)) {}
  std::string name() const override { return method; }
  Value call(Interpreter& in, const CallArgs& a, SourceLoc loc) const override {
    if (self.is_object()) return call_dict(in, a, loc);
    return call_string(in, a, loc);
  }

  Value call_dict(Interpreter& in, const CallArgs& a, SourceLoc loc) const {
    const Object& o = self.as_object();
    if (method == "get") {
      const Value* key = arg(a, 0, "key");
      if (!key) fail(in, loc, "get() needs a key");
      if (key->is_string())
        if (const Value* v = o.find(key->as_string())) return *v;
      const Value* def = arg(a, 1, "default");
      return def ? *def : Value::none();
    }
    Array out;
    for (const auto& [k, v] : o.entries) {
      if (method == "items") {
        out.push_back(Value::array({Value::string(k), v}));
      } else if (method == "keys") {
        out.push_back(Value::string(k));
      } else {
        out.push_back(v);
      }
    }
    return Value::array(std::move(out));
  }

  Value call_string(Interpreter& in, const CallArgs& a, SourceLoc loc) const {
    const std::string& s = self.as_string();
    const std::string& m = method;
    if (m == "upper") return Value::string(to_upper(s));
    if (m == "lower") return Value::string(to_lower(s));
    if (m == "title") return Value::string(to_title(s));
    if (m == "capitalize") return Value::string(capitalize(s));
    if (m == "strip" || m == "lstrip" || m == "rstrip") {
      const Value* chars = arg(a, 0, "chars");
      bool left = m != "rstrip", right = m != "lstrip";
      if (!chars || chars->is_none() || chars->is_undefined()) return Value::string(trim_whitespace(s, left, right));
      return Value::string(trim_chars(s, need_string(in, *chars, m.c_str(), loc), left, right));
    }
    if (m == "startswith" || m == "endswith") {
      const Value* p = arg(a, 0, "prefix");
      if (!p) fail(in, loc, m + "() needs an argument");
      return Value::boolean(affix_match(in, s, *p, m == "startswith", loc));
    }
    if (m == "split" || m == "rsplit")
      return Value::array(split(s, arg(a, 0, "sep"), arg_int(in, a, 1, "maxsplit", -1, loc), m == "rsplit", in, loc));
    if (m == "splitlines") {
      Array out;
      size_t pos = 0;
      while (pos < s.size()) {
        size_t nl = s.find_first_of("\r\n", pos);
        if (nl == std::string::npos) {
          out.push_back(Value::string(s.substr(pos)));
          break;
        }
        out.push_back(Value::string(s.substr(pos, nl - pos)));
        pos = nl + ((s[nl] == '\r' && nl + 1 < s.size() && s[nl + 1] == '\n') ? 2 : 1);
      }
      return Value::array(std::move(out));
    }
    if (m == "replace") {
      const Value* from = arg(a, 0, "old");
      const Value* to = arg(a, 1, "new");
      if (!from || !to) fail(in, loc, "replace() needs two arguments");
      std::string r = replace_all(s, need_string(in, *from, "replace()", loc), need_string(in, *to, "replace()", loc),
                                  arg_int(in, a, 2, "count", -1, loc));
      in.check_size(r.size(), loc);
      return Value::string(std::move(r));
    }
    if (m == "find" || m == "rfind" || m == "count") {
      const Value* sub = arg(a, 0, "sub");
      if (!sub) fail(in, loc, m + "() needs an argument");
      const std::string& needle = need_string(in, *sub, m.c_str(), loc);
      if (m == "count") {
        if (needle.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
        return Value::integer(n);
      }
      size_t p = m == "find" ? s.find(needle) : s.rfind(needle);
      return Value::integer(p == std::string::npos ? -1 : static_cast<int64_t>(utf8_length(s.substr(0, p))));
    }
    if (m == "join") {
      const Value* items = arg(a, 0, "iterable");
      if (!items) fail(in, loc, "join() needs an argument");
      std::string out;
      bool first = true;
      for (const Value& v : iterate(in, *items, "join()", loc)) {
        if (!first) out += s;
        out += need_string(in, v, "join()", loc);
        first = false;
        in.check_size(out.size(), loc);
      }
      return Value::string(std::move(out));
    }
    auto all_chars = [&](auto pred) {
      if (s.empty()) return Value::boolean(false);
      for (unsigned char c : s)
        if (!pred(c)) return Value::boolean(false);
      return Value::boolean(true);
    };
    if (m == "isdigit") return all_chars([](unsigned char c) { return c >= '0' && c <= '9'; });
    if (m == "isalpha") return all_chars([](unsigned char c) { return std::isalpha(c) != 0; });
    if (m == "isspace") return all_chars([](unsigned char c) { return std::isspace(c) != 0; });
    fail(in, loc, "unsupported string method '" + m + "'");
  }
};

constexpr std::string_view kStringMethods[] = {"upper",  "lower",      "title",   "capitalize", "strip",
                                               "lstrip", "rstrip",     "startswith", "endswith", "split",
                                               "rsplit", "splitlines", "replace", "find",       "rfind",
                                               "count",  "join",       "isdigit", "isalpha",    "isspace"};
constexpr std::string_view kDictMethods[] = {"get", "items", "keys", "values"};

// ---- global functions ----

struct GlobalFunction : Callable {
  std::string fn_name;
  Value (*impl)(Interpreter&, const CallArgs&, SourceLoc);
  GlobalFunction(std::string n, Value (*f)(Interpreter&, const CallArgs&, SourceLoc)) : fn_name(std::move(n)), impl(f) {}
  std::string name() const override { return fn_name; }
  Value call(Interpreter& in, const CallArgs& a, SourceLoc loc) const override { return impl(in, a, loc); }
};

Value fn_range(Interpreter& in, const CallArgs& a, SourceLoc loc) {
  if (a.positional.empty() || a.positional.size() > 3) fail(in, loc, "range() takes 1 to 3 integer arguments");
  for (const Value& v : a.positional)
    if (!v.is_int()) fail(in, loc, std::string("range() arguments must be integers, not ") + v.type_name());
  int64_t start = 0, stop = 0, step = 1;
  if (a.positional.size() == 1) {
    stop = a.positional[0].as_int();
  } else {
    start = a.positional[0].as_int();
    stop = a.positional[1].as_int();
    if (a.positional.size() == 3) step = a.positional[2].as_int();
  }
  if (step == 0) fail(in, loc, "range() step must not be zero");
  // Count without overflow: work in long double for the bound check.
  long double span = step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
  long double count = span <= 0 ? 0 : std::ceil(span / std::fabs(static_cast<long double>(step)));
  if (count > static_cast<long double>(in.limits().max_range))
    fail(in, loc, "range() of " + std::to_string(static_cast<uint64_t>(count)) + " elements exceeds the limit of " +
                      std::to_string(in.limits().max_range));
  Array out;
  int64_t v = start;
  for (int64_t k = 0; k < static_cast<int64_t>(count); ++k, v += step) out.push_back(Value::integer(v));
  return Value::array(std::move(out));
}

Object mapping_from_args(Interpreter& in, const CallArgs& a, const char* what, SourceLoc loc) {
  if (a.positional.size() > 1) fail(in, loc, std::string(what) + "() takes at most one positional argument");
  Object o;
  if (!a.positional.empty()) {
    const Value& src = a.positional[0];
    if (src.is_object()) {
      o = src.as_object();
    } else if (src.is_array()) {
      for (const Value& pair : src.as_array()) {
        if (!pair.is_array() || pair.as_array().size() != 2 || !pair.as_array()[0].is_string())
          fail(in, loc, std::string(what) + "() needs a dict or a list of [key, value] pairs");
        o.set(pair.as_array()[0].as_string(), pair.as_array()[1]);
      }
    } else {
      fail(in, loc, std::string(what) + "() needs a dict or a list of pairs, not " + src.type_name());
    }
  }
  for (const auto& [k, v] : a.keyword) o.set(k, v);
  return o;
}

Value fn_namespace(Interpreter& in, const CallArgs& a, SourceLoc loc) {
  return Value::namespace_(mapping_from_args(in, a, "namespace", loc));
}
Value fn_dict(Interpreter& in, const CallArgs& a, SourceLoc loc) {
  return Value::object(mapping_from_args(in, a, "dict", loc));
}
Value fn_raise(Interpreter& in, const CallArgs& a, SourceLoc loc) {
  std::string msg = a.positional.empty() ? std::string() : text_of(a.positional[0]);
  fail(in, loc, "the template raised an error: " + msg);
}

Value fn_strftime_now(Interpreter& in, const CallArgs& a, SourceLoc loc) {
  if (a.positional.size() != 1 || !a.positional[0].is_string()) fail(in, loc, "strftime_now() needs one format string");
  const std::string& f = a.positional[0].as_string();
  std::time_t t = std::chrono::system_clock::to_time_t(in.now());
  std::tm tm{};
  localtime_r(&t, &tm);
  static const char* kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                                  "July",    "August",   "September", "October", "November", "December"};
  static const char* kDays[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
  auto pad = [](int v, int width, bool no_pad) {
    std::string s = std::to_string(v);
    if (!no_pad)
      while (static_cast<int>(s.size()) < width) s = "0" + s;
    return s;
  };
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out.push_back(f[i]);
      continue;
    }
    if (i + 1 >= f.size()) fail(in, loc, "strftime_now(): format ends with a lone '%'");
    bool no_pad = f[i + 1] == '-';
    if (no_pad) ++i;
    if (i + 1 >= f.size()) fail(in, loc, "strftime_now(): format ends with '%-'");
    char c = f[++i];
    switch (c) {
      case 'Y': out += std::to_string(tm.tm_year + 1900); break;
      case 'y': out += pad((tm.tm_year + 1900) % 100, 2, no_pad); break;
      case 'm': out += pad(tm.tm_mon + 1, 2, no_pad); break;
      case 'd': out += pad(tm.tm_mday, 2, no_pad); break;
      case 'e': out += (tm.tm_mday < 10 && !no_pad ? " " : "") + std::to_string(tm.tm_mday); break;
      case 'H': out += pad(tm.tm_hour, 2, no_pad); break;
      case 'I': out += pad(tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12, 2, no_pad); break;
      case 'M': out += pad(tm.tm_min, 2, no_pad); break;
      case 'S': out += pad(tm.tm_sec, 2, no_pad); break;
      case 'p': out += tm.tm_hour < 12 ? "AM" : "PM"; break;
      case 'j': out += pad(tm.tm_yday + 1, 3, no_pad); break;
      case 'b': out += std::string(kMonths[tm.tm_mon]).substr(0, 3); break;
      case 'B': out += kMonths[tm.tm_mon]; break;
      case 'a': out += std::string(kDays[tm.tm_wday]).substr(0, 3); break;
      case 'A': out += kDays[tm.tm_wday]; break;
      case '%': out += '%'; break;
      default: fail(in, loc, std::string("strftime_now(): unsupported format directive '%") + c + "'");
    }
  }
  return Value::string(std::move(out));
}

// Python's round(): 'common' rounds half away from zero.
double round_to(double x, int64_t precision, const std::string& method) {
  double scale = std::pow(10.0, static_cast<double>(precision));
  double v = x * scale;
  if (method == "floor") v = std::floor(v);
  else if (method == "ceil") v = std::ceil(v);
  else v = std::round(v);
  return v / scale;
}

Value parse_number(const std::string& s, bool want_int, bool* ok) {
  std::string t = trim_whitespace(s, true, true);
  *ok = false;
  if (t.empty()) return Value();
  char* end = nullptr;
  if (want_int) {
    errno = 0;
    long long v = std::strtoll(t.c_str(), &end, 10);
    if (*end == '\0' && errno == 0) {
      *ok = true;
      return Value::integer(v);
    }
  }
  double d = std::strtod(t.c_str(), &end);
  if (*end != '\0' || std::isnan(d)) return Value();
  *ok = true;
  if (want_int) {
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) {
      *ok = false;
      return Value();
    }
    return Value::integer(static_cast<int64_t>(d));
  }
  return Value::floating(d);
}

}  // namespace

bool is_known_filter(const std::string& name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}
bool is_known_test(const std::string& name) {
  return name == "==" || std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

Value lookup_method(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    if (std::find(std::begin(kStringMethods), std::end(kStringMethods), name) != std::end(kStringMethods))
      return Value::function(std::make_shared<BoundMethod>(obj, name));
  } else if (obj.is_object()) {
    if (std::find(std::begin(kDictMethods), std::end(kDictMethods), name) != std::end(kDictMethods))
      return Value::function(std::make_shared<BoundMethod>(obj, name));
  }
  return Value();
}

void install_globals(Object& globals) {
  globals.set("range", Value::function(std::make_shared<GlobalFunction>("range", fn_range)));
  globals.set("namespace", Value::function(std::make_shared<GlobalFunction>("namespace", fn_namespace)));
  globals.set("dict", Value::function(std::make_shared<GlobalFunction>("dict", fn_dict)));
  globals.set("raise_exception", Value::function(std::make_shared<GlobalFunction>("raise_exception", fn_raise)));
  globals.set("strftime_now", Value::function(std::make_shared<GlobalFunction>("strftime_now", fn_strftime_now)));
}

bool apply_test(Interpreter& in, const std::string& name, const Value& v, const CallArgs& a, SourceLoc loc) {
  using K = Value::Kind;
  auto other = [&]() -> const Value& {
    if (a.positional.empty()) fail(in, loc, "test '" + name + "' needs an argument");
    return a.positional[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_array() || v.is_string() || v.is_object();
  if (name == "sequence") return v.is_array() || v.is_string() || v.is_object();
  if (name == "callable") return v.is_function();
  if (name == "lower") return v.is_string() && to_lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && to_upper(v.as_string()) == v.as_string();
  if (name == "odd" || name == "even") {
    if (!v.is_int()) fail(in, loc, "test '" + name + "' needs an integer, not " + v.type_name());
    bool odd = (v.as_int() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "divisibleby") {
    const Value& d = other();
    if (!v.is_int() || !d.is_int()) fail(in, loc, "test 'divisibleby' needs integers");
    if (d.as_int() == 0) fail(in, loc, "test 'divisibleby' with zero");
    return v.as_int() % d.as_int() == 0;
  }
  if (name == "equalto" || name == "eq" || name == "==") return values_equal(v, other());
  if (name == "ne") return !values_equal(v, other());
  if (name == "sameas") {
    const Value& o = other();
    if (v.kind() != o.kind()) return false;
    if (v.kind() == K::Array) return &v.as_array() == &o.as_array();
    if (v.kind() == K::Object) return &v.as_object() == &o.as_object();
    if (v.kind() == K::Namespace) return &v.namespace_object() == &o.namespace_object();
    return values_equal(v, o);
  }
  if (name == "lt" || name == "gt" || name == "le" || name == "ge") {
    int c = order(in, v, other(), true, loc);
    return name == "lt" ? c < 0 : name == "gt" ? c > 0 : name == "le" ? c <= 0 : c >= 0;
  }
  if (name == "in") {
    const Value& seq = other();
    if (seq.is_array()) {
      for (const Value& x : seq.as_array())
        if (values_equal(v, x)) return true;
      return false;
    }
    if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
    if (seq.is_object()) return v.is_string() && seq.as_object().find(v.as_string());
    fail(in, loc, std::string("test 'in' needs a list, string or dict, not ") + seq.type_name());
  }
  fail(in, loc, "unsupported test '" + name + "'");
}

Value apply_filter(Interpreter& in, const std::string& name, const Value& v, const CallArgs& a, SourceLoc loc) {
  const std::string& f = name;
  if (f == "safe") return v;
  if (f == "default" || f == "d") {
    const Value* def = arg(a, 0, "default_value");
    bool boolean = arg_bool(in, a, 1, "boolean", false, loc);
    if (v.is_undefined() || (boolean && !v.truthy())) return def ? *def : Value::string("");
    return v;
  }
  if (f == "tojson") {
    JsonFormat fmt;
    const Value* indent = arg(a, 0, "indent");
    if (indent && !indent->is_none() && !indent->is_undefined()) {
      if (!indent->is_int()) fail(in, loc, "tojson(): indent must be an integer");
      fmt.indent = static_cast<int>(std::clamp<int64_t>(indent->as_int(), -1, 64));
    }
    fmt.ensure_ascii = arg_bool(in, a, 99, "ensure_ascii", false, loc);
    fmt.sort_keys = arg_bool(in, a, 99, "sort_keys", false, loc);
    if (const Value* sep = a.kw("separators"); sep && !sep->is_none()) {
      if (!sep->is_array() || sep->as_array().size() != 2 || !sep->as_array()[0].is_string() ||
          !sep->as_array()[1].is_string())
        fail(in, loc, "tojson(): separators must be a pair of strings");
      fmt.has_separators = true;
      fmt.item_separator = sep->as_array()[0].as_string();
      fmt.key_separator = sep->as_array()[1].as_string();
    }
    std::string out = to_json(v, fmt);
    in.check_size(out.size(), loc);
    return Value::string(std::move(out));
  }
  if (f == "length" || f == "count") {
    switch (v.kind()) {
      case Value::Kind::String: return Value::integer(static_cast<int64_t>(utf8_length(v.as_string())));
      case Value::Kind::Array: return Value::integer(static_cast<int64_t>(v.as_array().size()));
      case Value::Kind::Object: return Value::integer(static_cast<int64_t>(v.as_object().entries.size()));
      case Value::Kind::Undefined: return Value::integer(0);
      default: fail(in, loc, std::string("filter 'length' needs a string, list or dict, not ") + v.type_name());
    }
  }
  if (f == "string") return Value::string(text_of(v));
  if (f == "upper") return Value::string(to_upper(need_string(in, v, "filter 'upper'", loc)));
  if (f == "lower") return Value::string(to_lower(need_string(in, v, "filter 'lower'", loc)));
  if (f == "title") return Value::string(to_title(need_string(in, v, "filter 'title'", loc)));
  if (f == "capitalize") return Value::string(capitalize(need_string(in, v, "filter 'capitalize'", loc)));
  if (f == "trim") {
    const std::string& s = need_string(in, v, "filter 'trim'", loc);
    const Value* chars = arg(a, 0, "chars");
    if (!chars || chars->is_none() || chars->is_undefined()) return Value::string(trim_whitespace(s, true, true));
    return Value::string(trim_chars(s, need_string(in, *chars, "filter 'trim'", loc), true, true));
  }
  if (f == "e" || f == "escape") {
    if (v.is_none()) return Value::string("None");
    return Value::string(html_escape(v.is_string() ? v.as_string() : text_of(v)));
  }
  if (f == "replace") {
    const std::string& s = need_string(in, v, "filter 'replace'", loc);
    std::string from = arg_string(in, a, 0, "old", "", loc), to = arg_string(in, a, 1, "new", "", loc);
    if (!arg(a, 0, "old") || !arg(a, 1, "new")) fail(in, loc, "filter 'replace' needs two arguments");
    std::string r = replace_all(s, from, to, arg_int(in, a, 2, "count", -1, loc));
    in.check_size(r.size(), loc);
    return Value::string(std::move(r));
  }
  if (f == "indent") {
    const std::string& s = need_string(in, v, "filter 'indent'", loc);
    std::string unit;
    const Value* width = arg(a, 0, "width");
    if (!width || width->is_undefined()) {
      unit = "    ";
    } else if (width->is_string()) {
      unit = width->as_string();
    } else if (width->is_int()) {
      unit = std::string(static_cast<size_t>(std::clamp<int64_t>(width->as_int(), 0, 1024)), ' ');
    } else {
      fail(in, loc, "filter 'indent': width must be an integer or a string");
    }
    bool first = arg_bool(in, a, 1, "first", false, loc);
    bool blank = arg_bool(in, a, 2, "blank", false, loc);
    std::string out;
    size_t pos = 0;
    bool is_first = true;
    while (true) {
      size_t nl = s.find('\n', pos);
      std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (!is_first) out += "\n";
      if ((is_first ? first : true) && (blank || !line.empty())) out += unit;
      out += line;
      in.check_size(out.size(), loc);
      is_first = false;
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
    return Value::string(std::move(out));
  }
  if (f == "center") {
    const std::string& s = need_string(in, v, "filter 'center'", loc);
    int64_t width = std::min<int64_t>(arg_int(in, a, 0, "width", 80, loc), 1 << 20);
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (width <= len) return v;
    int64_t total = width - len;
    int64_t left = total / 2 + (total & width & 1);  // Python's str.center split
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(total - left), ' '));
  }
  if (f == "wordcount") {
    return Value::integer(static_cast<int64_t>(split(need_string(in, v, "filter 'wordcount'", loc), nullptr, -1, false, in, loc).size()));
  }
  if (f == "int" || f == "float") {
    bool want_int = f == "int";
    Value def = want_int ? Value::integer(0) : Value::floating(0.0);
    if (const Value* d = arg(a, 0, "default")) def = *d;
    if (v.is_int()) return want_int ? v : Value::floating(static_cast<double>(v.as_int()));
    if (v.is_float()) {
      if (!want_int) return v;
      if (!std::isfinite(v.as_float()) || std::fabs(v.as_float()) >= 9.2e18) return def;
      return Value::integer(static_cast<int64_t>(v.as_float()));
    }
    if (v.is_bool()) return want_int ? Value::integer(v.as_bool()) : Value::floating(v.as_bool() ? 1.0 : 0.0);
    if (v.is_string()) {
      bool ok = false;
      Value r = parse_number(v.as_string(), want_int, &ok);
      return ok ? r : def;
    }
    return def;
  }
  if (f == "abs") {
    if (v.is_int()) {
      if (v.as_int() == INT64_MIN) fail(in, loc, "integer overflow in filter 'abs'");
      return Value::integer(std::llabs(v.as_int()));
    }
    if (v.is_float()) return Value::floating(std::fabs(v.as_float()));
    fail(in, loc, std::string("filter 'abs' needs a number, not ") + v.type_name());
  }
  if (f == "round") {
    if (!v.is_number()) fail(in, loc, std::string("filter 'round' needs a number, not ") + v.type_name());
    std::string method = arg_string(in, a, 1, "method", "common", loc);
    if (method != "common" && method != "floor" && method != "ceil")
      fail(in, loc, "filter 'round': method must be 'common', 'floor' or 'ceil'");
    return Value::floating(round_to(v.as_double(), arg_int(in, a, 0, "precision", 0, loc), method));
  }
  if (f == "first" || f == "last") {
    if (v.is_string()) {
      auto chars = utf8_chars(v.as_string());
      if (chars.empty()) return Value();
      return Value::string(f == "first" ? chars.front() : chars.back());
    }
    Array items = iterate(in, v, ("filter '" + f + "'").c_str(), loc);
    if (items.empty()) return Value();
    return f == "first" ? items.front() : items.back();
  }
  if (f == "list") return Value::array(iterate(in, v, "filter 'list'", loc));
  if (f == "reverse") {
    if (v.is_string()) {
      auto chars = utf8_chars(v.as_string());
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value::string(std::move(out));
    }
    Array items = iterate(in, v, "filter 'reverse'", loc);
    std::reverse(items.begin(), items.end());
    return Value::array(std::move(items));
  }
  if (f == "items") {
    if (v.is_undefined()) return Value::array({});
    if (!v.is_object()) fail(in, loc, std::string("filter 'items' needs a dict, not ") + v.type_name());
    Array out;
    for (const auto& [k, x] : v.as_object().entries) out.push_back(Value::array({Value::string(k), x}));
    return Value::array(std::move(out));
  }
  if (f == "dictsort") {
    if (!v.is_object()) fail(in, loc, std::string("filter 'dictsort' needs a dict, not ") + v.type_name());
    bool case_sensitive = arg_bool(in, a, 0, "case_sensitive", false, loc);
    std::string by = arg_string(in, a, 1, "by", "key", loc);
    if (by != "key" && by != "value") fail(in, loc, "filter 'dictsort': by must be 'key' or 'value'");
    bool reverse = arg_bool(in, a, 2, "reverse", false, loc);
    Array out;
    for (const auto& [k, x] : v.as_object().entries) out.push_back(Value::array({Value::string(k), x}));
    size_t idx = by == "key" ? 0 : 1;
    std::stable_sort(out.begin(), out.end(), [&](const Value& p, const Value& q) {
      int c = order(in, p.as_array()[idx], q.as_array()[idx], case_sensitive, loc);
      return reverse ? c > 0 : c < 0;
    });
    return Value::array(std::move(out));
  }
  if (f == "sort" || f == "unique" || f == "min" || f == "max") {
    Array items = iterate(in, v, ("filter '" + f + "'").c_str(), loc);
    bool reverse = f == "sort" ? arg_bool(in, a, 0, "reverse", false, loc) : false;
    bool case_sensitive = arg_bool(in, a, f == "sort" ? 1 : 0, "case_sensitive", false, loc);
    const Value* attr_v = arg(a, f == "sort" ? 2 : 1, "attribute");
    std::string attr;
    if (attr_v && !attr_v->is_none() && !attr_v->is_undefined()) {
      if (attr_v->is_int()) attr = std::to_string(attr_v->as_int());
      else attr = need_string(in, *attr_v, "attribute", loc);
    }
    auto key = [&](const Value& x) { return attr.empty() ? x : attribute_path(x, attr); };
    if (f == "unique") {
      Array out;
      std::vector<Value> seen;
      for (const Value& x : items) {
        Value k = key(x);
        if (k.is_string() && !case_sensitive) k = Value::string(to_lower(k.as_string()));
        bool dup = false;
        for (const Value& s : seen)
          if (values_equal(s, k)) {
            dup = true;
            break;
          }
        if (!dup) {
          seen.push_back(k);
          out.push_back(x);
        }
      }
      return Value::array(std::move(out));
    }
    std::stable_sort(items.begin(), items.end(), [&](const Value& p, const Value& q) {
      int c = order(in, key(p), key(q), case_sensitive, loc);
      return reverse ? c > 0 : c < 0;
    });
    if (f == "sort") return Value::array(std::move(items));
    if (items.empty()) return Value();
    return f == "min" ? items.front() : items.back();
  }
  if (f == "join") {
    std::string sep = arg_string(in, a, 0, "d", "", loc);
    const Value* attr = arg(a, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& x : iterate(in, v, "filter 'join'", loc)) {
      if (!first) out += sep;
      first = false;
      out += text_of(attr && attr->is_string() ? attribute_path(x, attr->as_string()) : x);
      in.check_size(out.size(), loc);
    }
    return Value::string(std::move(out));
  }
  if (f == "sum") {
    const Value* attr = arg(a, 0, "attribute");
    Value total = Value::integer(0);
    if (const Value* start = arg(a, 1, "start")) total = *start;
    for (const Value& x0 : iterate(in, v, "filter 'sum'", loc)) {
      Value x = attr && attr->is_string() ? attribute_path(x0, attr->as_string()) : x0;
      if (!(x.is_number() || x.is_bool()) || !(total.is_number() || total.is_bool()))
        fail(in, loc, std::string("filter 'sum' needs numbers, found ") + x.type_name());
      if ((total.is_int() || total.is_bool()) && (x.is_int() || x.is_bool())) {
        int64_t r = 0;
        if (__builtin_add_overflow(static_cast<int64_t>(total.as_double()), static_cast<int64_t>(x.as_double()), &r))
          fail(in, loc, "integer overflow in filter 'sum'");
        total = Value::integer(r);
      } else {
        total = Value::floating(total.as_double() + x.as_double());
      }
    }
    return total;
  }
  if (f == "map") {
    Array items = iterate(in, v, "filter 'map'", loc);
    Array out;
    if (const Value* attr = a.kw("attribute")) {
      const std::string& path = need_string(in, *attr, "filter 'map' attribute", loc);
      const Value* def = a.kw("default");
      for (const Value& x : items) {
        Value r = attribute_path(x, path);
        out.push_back(r.is_undefined() && def ? *def : r);
      }
      return Value::array(std::move(out));
    }
    if (a.positional.empty()) fail(in, loc, "filter 'map' needs a filter name or attribute=");
    const std::string& inner = need_string(in, a.positional[0], "filter 'map'", loc);
    if (!is_known_filter(inner) || inner == "map") fail(in, loc, "filter 'map': unsupported filter '" + inner + "'");
    CallArgs rest;
    rest.positional.assign(a.positional.begin() + 1, a.positional.end());
    rest.keyword = a.keyword;
    for (const Value& x : items) {
      in.step(loc);
      out.push_back(apply_filter(in, inner, x, rest, loc));
    }
    return Value::array(std::move(out));
  }
  if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr") {
    const bool by_attr = f == "selectattr" || f == "rejectattr";
    const bool keep_if = f == "select" || f == "selectattr";
    Array items = iterate(in, v, ("filter '" + f + "'").c_str(), loc);
    size_t k = 0;
    std::string attr;
    if (by_attr) {
      if (a.positional.empty()) fail(in, loc, "filter '" + f + "' needs an attribute name");
      attr = need_string(in, a.positional[0], ("filter '" + f + "'").c_str(), loc);
      k = 1;
    }
    std::string test;
    if (k < a.positional.size()) {
      test = need_string(in, a.positional[k], ("filter '" + f + "'").c_str(), loc);
      if (!is_known_test(test)) fail(in, loc, "filter '" + f + "': unsupported test '" + test + "'");
    }
    CallArgs rest;
    if (k + 1 < a.positional.size()) rest.positional.assign(a.positional.begin() + static_cast<long>(k) + 1, a.positional.end());
    Array out;
    for (const Value& x : items) {
      in.step(loc);
      Value subject = by_attr ? attribute_path(x, attr) : x;
      bool r = test.empty() ? subject.truthy() : apply_test(in, test, subject, rest, loc);
      if (r == keep_if) out.push_back(x);
    }
    return Value::array(std::move(out));
  }
  fail(in, loc, "unsupported filter '" + f + "'");
}

}  // namespace tandem::jinja
