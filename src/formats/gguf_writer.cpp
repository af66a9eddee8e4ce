// GGUF v3 writer: metadata in insertion order, tensors at aligned offsets,
// written through a temporary file that is renamed into place.
#include <cstring>
#include <limits>

#include "common/error.h"
#include "formats/format_io.h"
#include "formats/gguf.h"

namespace tandem::gguf {
namespace {

constexpr const char* kAlignmentKey = "general.alignment";
constexpr uint32_t kMaxDims = 4;

// Checks that every array item has the array's declared element type, so that
// write() can encode the value exactly as the reader will decode it.
void validate_value(const std::string& key, const Value& v) {
  // A default-constructed Value has a type but no content; catch it here
  // rather than halfway through write().
  try {
    switch (v.type()) {
      case ValueType::BOOL: v.as_bool(); break;
      case ValueType::STRING: v.as_string(); break;
      case ValueType::FLOAT32:
      case ValueType::FLOAT64: v.as_float(); break;
      case ValueType::ARRAY: v.as_array(); break;
      default:
        if (!v.is_integer()) throw Error("unknown value type");
        (void)v.as_float();  // any integer content converts; an empty Value throws
        break;
    }
  } catch (const Error&) {
    throw Error("GGUF metadata key '" + key + "' has a " + value_type_name(v.type()) + " type but no value");
  }
  if (v.type() != ValueType::ARRAY) return;
  const Value::Array& a = v.as_array();
  for (const Value& item : a.items) {
    if (item.type() != a.elem_type)
      throw Error("GGUF metadata key '" + key + "': an array of " + value_type_name(a.elem_type) +
                  " holds a " + value_type_name(item.type()) + " item");
    validate_value(key, item);
  }
}

uint64_t alignment_from_value(const Value& v) {
  if (!v.is_integer())
    throw Error(std::string("GGUF ") + kAlignmentKey + " must be an integer, got " + value_type_name(v.type()));
  const int64_t signed_v = v.as_int();
  if (signed_v <= 0 || !formats::is_power_of_two(static_cast<uint64_t>(signed_v)))
    throw Error(std::string("GGUF ") + kAlignmentKey + " must be a non-zero power of two, got " +
                std::to_string(signed_v));
  return static_cast<uint64_t>(signed_v);
}

// Appends little-endian encodings to a byte string (the whole header is built
// in memory; it is small next to the tensor data).
class Encoder {
 public:
  std::string bytes;

  template <typename T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes.append(b, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes += s;
  }
  void put_value(const Value& v) {
    switch (v.type()) {
      case ValueType::UINT8: put<uint8_t>(static_cast<uint8_t>(v.as_uint())); break;
      case ValueType::INT8: put<int8_t>(static_cast<int8_t>(v.as_int())); break;
      case ValueType::UINT16: put<uint16_t>(static_cast<uint16_t>(v.as_uint())); break;
      case ValueType::INT16: put<int16_t>(static_cast<int16_t>(v.as_int())); break;
      case ValueType::UINT32: put<uint32_t>(static_cast<uint32_t>(v.as_uint())); break;
      case ValueType::INT32: put<int32_t>(static_cast<int32_t>(v.as_int())); break;
      case ValueType::UINT64: put<uint64_t>(v.as_uint()); break;
      case ValueType::INT64: put<int64_t>(v.as_int()); break;
      case ValueType::FLOAT32: put<float>(static_cast<float>(v.as_float())); break;
      case ValueType::FLOAT64: put<double>(v.as_float()); break;
      case ValueType::BOOL: put<uint8_t>(v.as_bool() ? 1 : 0); break;
      case ValueType::STRING: put_string(v.as_string()); break;
      case ValueType::ARRAY: {
        const Value::Array& a = v.as_array();
        put<uint32_t>(static_cast<uint32_t>(a.elem_type));
        put<uint64_t>(a.items.size());
        for (const Value& item : a.items) put_value(item);
        break;
      }
    }
  }
};

}  // namespace

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (!formats::is_power_of_two(alignment) || alignment > std::numeric_limits<uint32_t>::max())
    throw Error("GGUF alignment must be a non-zero power of two below 2^32, got " + std::to_string(alignment));
  // The reader assumes 32 when the key is absent; any other value must be stated.
  if (alignment != 32) metadata_.push_back(KeyValue{kAlignmentKey, Value::u32(static_cast<uint32_t>(alignment))});
}

void GgufWriter::set(const std::string& key, Value value) {
  validate_value(key, value);
  if (key == kAlignmentKey) alignment_ = alignment_from_value(value);
  for (KeyValue& kv : metadata_) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  metadata_.push_back(KeyValue{key, std::move(value)});
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                            uint64_t n_bytes) {
  const std::string label = "GGUF tensor '" + name + "'";
  if (name.empty()) throw Error("GGUF tensor names must not be empty");
  for (const PendingTensor& t : tensors_)
    if (t.name == name) throw Error(label + " was added twice");
  if (shape.size() > kMaxDims)
    throw Error(label + " has " + std::to_string(shape.size()) + " dimensions; GGUF allows at most 4");
  int64_t n_elements = 1;
  for (int64_t d : shape) {
    if (d <= 0) throw Error(label + " has a dimension of size " + std::to_string(d) + "; sizes must be positive");
    if (__builtin_mul_overflow(n_elements, d, &n_elements)) throw Error(label + " has too many elements");
  }
  const DTypeInfo info = dtype_info(dtype);
  const int64_t row = shape.empty() ? 1 : shape.back();
  if (row % info.block_elems != 0)
    throw Error(label + " has rows of " + std::to_string(row) + " values, not a whole number of " + info.name +
                " blocks of " + std::to_string(info.block_elems));
  const uint64_t expected = static_cast<uint64_t>(n_elements / info.block_elems * info.block_bytes);
  if (n_bytes != expected)
    throw Error(label + " is given " + std::to_string(n_bytes) + " bytes, but its " + info.name + " shape needs " +
                std::to_string(expected));
  if (data == nullptr && n_bytes > 0) throw Error(label + " has no data");
  tensors_.push_back(PendingTensor{name, dtype, std::move(shape), data, n_bytes});
}

void GgufWriter::write(const std::string& path) const {
  Encoder e;
  e.bytes.append("GGUF", 4);
  e.put<uint32_t>(3);
  e.put<uint64_t>(tensors_.size());
  e.put<uint64_t>(metadata_.size());
  for (const KeyValue& kv : metadata_) {
    e.put_string(kv.key);
    e.put<uint32_t>(static_cast<uint32_t>(kv.value.type()));
    e.put_value(kv.value);
  }
  // Offsets are relative to the data section, each rounded up to the alignment.
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    formats::align_up(offset, alignment_, &offset);
    offsets.push_back(offset);
    e.put_string(t.name);
    e.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) e.put<uint64_t>(static_cast<uint64_t>(*it));
    e.put<uint32_t>(static_cast<uint32_t>(t.dtype));
    e.put<uint64_t>(offset);
    offset += t.n_bytes;
  }

  formats::AtomicFileWriter out(path);
  out.write(e.bytes.data(), e.bytes.size());
  uint64_t data_start = 0;
  formats::align_up(out.bytes_written(), alignment_, &data_start);
  out.write_zeros(data_start - out.bytes_written());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    out.write_zeros(data_start + offsets[i] - out.bytes_written());
    out.write(tensors_[i].data, tensors_[i].n_bytes);
  }
  // Pad the last tensor too, so that the data section is a multiple of the alignment.
  uint64_t end = 0;
  formats::align_up(out.bytes_written(), alignment_, &end);
  if (!tensors_.empty()) out.write_zeros(end - out.bytes_written());
  out.commit();
}

}  // namespace tandem::gguf
