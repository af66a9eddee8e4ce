// tandem::gguf::Value: typed access to one metadata value.
#include <limits>

#include "common/error.h"
#include "formats/gguf.h"

namespace tandem::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "uint8";
    case ValueType::INT8: return "int8";
    case ValueType::UINT16: return "uint16";
    case ValueType::INT16: return "int16";
    case ValueType::UINT32: return "uint32";
    case ValueType::INT32: return "int32";
    case ValueType::FLOAT32: return "float32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "uint64";
    case ValueType::INT64: return "int64";
    case ValueType::FLOAT64: return "float64";
  }
  return "unknown";
}

Value Value::string_array(const std::vector<std::string>& items) {
  std::vector<Value> values;
  values.reserve(items.size());
  for (const auto& s : items) values.push_back(Value::string(s));
  return Value::array(ValueType::STRING, std::move(values));
}

Value Value::f32_array(const std::vector<float>& items) {
  std::vector<Value> values;
  values.reserve(items.size());
  for (float f : items) values.push_back(Value::f32(f));
  return Value::array(ValueType::FLOAT32, std::move(values));
}

Value Value::i32_array(const std::vector<int32_t>& items) {
  std::vector<Value> values;
  values.reserve(items.size());
  for (int32_t v : items) values.push_back(Value::i32(v));
  return Value::array(ValueType::INT32, std::move(values));
}

bool Value::is_integer() const {
  switch (type_) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64: return true;
    default: return false;
  }
}

namespace {
[[noreturn]] void wrong_type(ValueType have, const char* want) {
  throw Error(std::string("metadata value is ") + value_type_name(have) + ", expected " + want);
}
}  // namespace

int64_t Value::as_int() const {
  if (const auto* s = std::get_if<int64_t>(&storage_); s != nullptr && is_integer()) return *s;
  if (const auto* u = std::get_if<uint64_t>(&storage_); u != nullptr && is_integer()) {
    check(*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
          "metadata value " + std::to_string(*u) + " does not fit in a signed 64-bit integer");
    return static_cast<int64_t>(*u);
  }
  wrong_type(type_, "an integer");
}

uint64_t Value::as_uint() const {
  if (const auto* u = std::get_if<uint64_t>(&storage_); u != nullptr && is_integer()) return *u;
  if (const auto* s = std::get_if<int64_t>(&storage_); s != nullptr && is_integer()) {
    check(*s >= 0, "metadata value " + std::to_string(*s) + " is negative, expected an unsigned integer");
    return static_cast<uint64_t>(*s);
  }
  wrong_type(type_, "an unsigned integer");
}

double Value::as_float() const {
  if (const auto* d = std::get_if<double>(&storage_); d != nullptr && is_float()) return *d;
  if (is_integer()) {
    if (const auto* u = std::get_if<uint64_t>(&storage_)) return static_cast<double>(*u);
    if (const auto* s = std::get_if<int64_t>(&storage_)) return static_cast<double>(*s);
  }
  wrong_type(type_, "a number");
}

bool Value::as_bool() const {
  if (const auto* b = std::get_if<bool>(&storage_); b != nullptr && type_ == ValueType::BOOL) return *b;
  wrong_type(type_, "a bool");
}

const std::string& Value::as_string() const {
  if (const auto* s = std::get_if<std::string>(&storage_); s != nullptr && type_ == ValueType::STRING)
    return *s;
  wrong_type(type_, "a string");
}

const Value::Array& Value::as_array() const {
  if (const auto* a = std::get_if<Array>(&storage_); a != nullptr && type_ == ValueType::ARRAY) return *a;
  wrong_type(type_, "an array");
}

}  // namespace tandem::gguf
