// GGUF v2/v3: reader (mmap, every offset and size bounds-checked) and writer.
//
// File layout (little-endian):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | n_dims x u64 ne (innermost first) | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32)
//   tensor data; each tensor's offset is relative to the start of this section and aligned.
// Strings are u64 length + bytes (no terminator). Arrays are u32 elem_type + u64 count + elems.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "formats/tensor_ref.h"

namespace tandem::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

const char* value_type_name(ValueType t);

// One metadata value. Integers of every width are held as int64/uint64,
// floats as double; type() keeps the width written in the file so that a
// round trip through the writer is exact.
class Value {
 public:
  struct Array {
    ValueType elem_type = ValueType::UINT8;
    std::vector<Value> items;
  };

  Value() = default;
  static Value u8(uint8_t v) { return Value(ValueType::UINT8, uint64_t{v}); }
  static Value i8(int8_t v) { return Value(ValueType::INT8, int64_t{v}); }
  static Value u16(uint16_t v) { return Value(ValueType::UINT16, uint64_t{v}); }
  static Value i16(int16_t v) { return Value(ValueType::INT16, int64_t{v}); }
  static Value u32(uint32_t v) { return Value(ValueType::UINT32, uint64_t{v}); }
  static Value i32(int32_t v) { return Value(ValueType::INT32, int64_t{v}); }
  static Value u64(uint64_t v) { return Value(ValueType::UINT64, v); }
  static Value i64(int64_t v) { return Value(ValueType::INT64, v); }
  static Value f32(float v) { return Value(ValueType::FLOAT32, double{v}); }
  static Value f64(double v) { return Value(ValueType::FLOAT64, v); }
  static Value boolean(bool v) { return Value(ValueType::BOOL, v); }
  static Value string(std::string v) { return Value(ValueType::STRING, std::move(v)); }
  static Value array(ValueType elem_type, std::vector<Value> items) {
    return Value(ValueType::ARRAY, Array{elem_type, std::move(items)});
  }
  static Value string_array(const std::vector<std::string>& items);
  static Value f32_array(const std::vector<float>& items);
  static Value i32_array(const std::vector<int32_t>& items);

  ValueType type() const { return type_; }
  bool is_integer() const;
  bool is_float() const { return type_ == ValueType::FLOAT32 || type_ == ValueType::FLOAT64; }

  // Each accessor throws tandem::Error when the value has another type.
  // as_int/as_uint accept any integer type whose value fits.
  int64_t as_int() const;
  uint64_t as_uint() const;
  double as_float() const;  // accepts integers too
  bool as_bool() const;
  const std::string& as_string() const;
  const Array& as_array() const;

 private:
  using Storage = std::variant<std::monostate, uint64_t, int64_t, double, bool, std::string, Array>;
  Value(ValueType t, Storage s) : type_(t), storage_(std::move(s)) {}
  ValueType type_ = ValueType::UINT8;
  Storage storage_;
};

struct KeyValue {
  std::string key;
  Value value;
};

class GgufFile {
 public:
  // Maps and parses `path`. Throws tandem::Error, naming the path and the
  // problem, on a wrong magic, an unsupported version, a truncated file, a
  // tensor past the end of the file, an unknown tensor type, or any size that
  // does not add up.
  static std::unique_ptr<GgufFile> open(const std::string& path);

  // Parses an image already in memory (used by the fuzzer and by tests).
  // PRECONDITIONS: `data` stays alive and unchanged while the returned
  // object lives (TensorRef::data points into it); `name` is only used in
  // error messages.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;
  // Typed lookups. The required forms throw "<file>: missing metadata key '<key>'";
  // all throw when the type is wrong.
  const Value& get(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::optional<std::string> get_string_opt(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  std::optional<int64_t> get_int_opt(std::string_view key) const;
  std::optional<double> get_float_opt(std::string_view key) const;
  std::optional<bool> get_bool_opt(std::string_view key) const;
  // Required arrays; the error names the file and the key when the key is
  // missing, is not an array, or (for the string form) holds non-strings.
  const Value::Array& get_array(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;

  // Tensors in file order; shapes are row-major (outermost first).
  const std::vector<TensorRef>& tensors() const { return tensors_; }
  const TensorRef* find_tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  void parse_image(const uint8_t* data, size_t size);

  std::unique_ptr<MappedFile> file_;
  std::string path_;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<KeyValue> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<TensorRef> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF v3 file. Tensor bytes are not copied: the caller keeps them
// alive until write() returns.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32);
  // Replaces the value if the key exists.
  void set(const std::string& key, Value value);
  // `shape` is row-major (outermost first); `n_bytes` must equal the size that
  // dtype and shape imply (throws tandem::Error otherwise).
  // PRECONDITIONS: `data` stays valid until write() returns; nothing is copied.
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                  uint64_t n_bytes);
  // Writes to a temporary file beside `path` and renames it into place, so
  // that a failed write never leaves a truncated model behind.
  void write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    uint64_t n_bytes;
  };
  uint64_t alignment_;
  std::vector<KeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace tandem::gguf
