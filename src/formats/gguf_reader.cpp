// GGUF v2/v3 reader. Every count, length, offset and size read from the file
// is checked against the bytes that remain before it is used, so a truncated
// or corrupt file gives one tandem::Error naming the file and the problem and
// never an out-of-bounds read, a crash or a huge allocation.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "common/error.h"
#include "formats/format_io.h"
#include "formats/gguf.h"

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace tandem::gguf {
namespace {

constexpr uint32_t kMaxDims = 4;          // GGML's limit on tensor dimensions
constexpr int kMaxArrayNesting = 8;       // deeper arrays are corrupt, not metadata
constexpr uint64_t kDefaultAlignment = 32;
constexpr const char* kAlignmentKey = "general.alignment";

// Smallest number of bytes one value of `t` occupies in the file; used to
// reject counts that cannot fit in the bytes that remain.
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL: return 1;
    case ValueType::UINT16:
    case ValueType::INT16: return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32: return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool is_known_value_type(uint32_t raw) { return raw <= static_cast<uint32_t>(ValueType::FLOAT64); }

// Sequential reader over the header with bounds checks. `what` describes the
// item being read, for the error message; it is only formatted on failure.
class HeaderParser {
 public:
  HeaderParser(const uint8_t* data, size_t size, const std::string& file)
      : data_(data), size_(size), file_(file) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& problem) const { throw Error(file_ + ": " + problem); }

  // `what` is a string or a callable returning one, so that hot loops
  // (large arrays) format nothing unless the read fails.
  template <typename What>
  static std::string describe(const What& what) {
    if constexpr (std::is_invocable_v<What>) {
      return what();
    } else {
      return std::string(what);
    }
  }

  template <typename What>
  void need(size_t n, const What& what) const {
    if (n > remaining())
      fail("the file ends inside " + describe(what) + " (offset " + std::to_string(pos_) + " needs " +
           std::to_string(n) + " bytes, " + std::to_string(remaining()) +
           " remain); the file is truncated or corrupt");
  }

  template <typename T, typename What>
  T read(const What& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // Reads a u64-length string. The length is checked against the remaining
  // bytes before any allocation.
  template <typename What>
  std::string read_string(const What& what) {
    const auto len = read<uint64_t>([&] { return "the length of " + describe(what); });
    if (len > remaining())
      fail(describe(what) + " claims a length of " + std::to_string(len) + " bytes but only " +
           std::to_string(remaining()) + " bytes remain in the file; the file is truncated or corrupt");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

  Value read_value(ValueType type, const std::string& key, int depth) {
    const auto what = [&] { return "the value of metadata key '" + formats::printable(key) + "'"; };
    switch (type) {
      case ValueType::UINT8: return Value::u8(read<uint8_t>(what));
      case ValueType::INT8: return Value::i8(read<int8_t>(what));
      case ValueType::UINT16: return Value::u16(read<uint16_t>(what));
      case ValueType::INT16: return Value::i16(read<int16_t>(what));
      case ValueType::UINT32: return Value::u32(read<uint32_t>(what));
      case ValueType::INT32: return Value::i32(read<int32_t>(what));
      case ValueType::UINT64: return Value::u64(read<uint64_t>(what));
      case ValueType::INT64: return Value::i64(read<int64_t>(what));
      case ValueType::FLOAT32: return Value::f32(read<float>(what));
      case ValueType::FLOAT64: return Value::f64(read<double>(what));
      case ValueType::BOOL: {
        const auto b = read<uint8_t>(what);
        if (b > 1)
          fail("metadata key '" + formats::printable(key) + "' holds the bool value " + std::to_string(b) +
               " (expected 0 or 1); the file is corrupt");
        return Value::boolean(b == 1);
      }
      case ValueType::STRING: return Value::string(read_string(what));
      case ValueType::ARRAY: return read_array(key, depth + 1);
    }
    fail("metadata key '" + formats::printable(key) + "' has unknown value type " +
         std::to_string(static_cast<uint32_t>(type)));
  }

  Value read_array(const std::string& key, int depth) {
    const auto what = [&] { return "the array header of metadata key '" + formats::printable(key) + "'"; };
    if (depth > kMaxArrayNesting)
      fail("metadata key '" + formats::printable(key) + "' nests arrays more than " +
           std::to_string(kMaxArrayNesting) + " deep; the file is corrupt");
    const auto raw_elem = read<uint32_t>(what);
    if (!is_known_value_type(raw_elem))
      fail("metadata key '" + formats::printable(key) + "' is an array of unknown value type " +
           std::to_string(raw_elem) + " (known: 0-12); the file is corrupt or newer than Tandem");
    const auto elem = static_cast<ValueType>(raw_elem);
    const auto count = read<uint64_t>(what);
    const uint64_t min_size = min_encoded_size(elem);
    if (count > remaining() / min_size)
      fail("metadata key '" + formats::printable(key) + "' claims an array of " + std::to_string(count) + " " +
           value_type_name(elem) + " values, which needs at least " +
           (count > UINT64_MAX / min_size ? std::string("2^64") : std::to_string(count * min_size)) +
           " bytes, but only " + std::to_string(remaining()) +
           " bytes remain in the file; the file is truncated or corrupt");
    std::vector<Value> items;
    items.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) items.push_back(read_value(elem, key, depth));
    return Value::array(elem, std::move(items));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

std::string tensor_label(const std::string& name) { return "tensor '" + formats::printable(name) + "'"; }

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->file_ = std::make_unique<MappedFile>(path);
  f->path_ = path;
  f->parse_image(f->file_->data(), f->file_->size());
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->parse_image(data, size);
  return f;
}

void GgufFile::parse_image(const uint8_t* data, size_t size) {
  size_ = size;
  HeaderParser p(data, size, path_);

  // --- fixed header -------------------------------------------------------
  if (size < 4) p.fail("is " + std::to_string(size) + " bytes, too small to be a GGUF file");
  const std::string_view magic(reinterpret_cast<const char*>(data), 4);
  if (magic != "GGUF") {
    if (magic == "lmgg" || magic == "fmgg" || magic == "tjgg" || magic == "algg")
      p.fail("is a legacy GGML/GGJT model file, not GGUF; convert it to GGUF with current tools");
    p.fail("is not a GGUF file (it starts with '" + formats::printable(magic) + "', expected 'GGUF')");
  }
  p.read<uint32_t>("the magic");
  version_ = p.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xFFFFu) == 0 && __builtin_bswap32(version_) >= 1 && __builtin_bswap32(version_) <= 3)
      p.fail("is a big-endian GGUF file (version " + std::to_string(__builtin_bswap32(version_)) +
             " byte-swapped); Tandem reads little-endian GGUF only");
    if (version_ == 1)
      p.fail("is GGUF version 1, which is not supported (Tandem reads v2 and v3); re-convert the model "
             "with current tools");
    p.fail("has unsupported GGUF version " + std::to_string(version_) + " (Tandem reads v2 and v3)");
  }
  const auto n_tensors = p.read<uint64_t>("the tensor count");
  const auto n_kv = p.read<uint64_t>("the metadata count");

  // --- metadata -------------------------------------------------------------
  // The smallest entry is a 0-length key (8), a type (4) and a 1-byte value.
  constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
  if (n_kv > p.remaining() / kMinKvBytes)
    p.fail("the header claims " + std::to_string(n_kv) + " metadata entries, but only " +
           std::to_string(p.remaining()) + " bytes remain; the file is truncated or corrupt");
  metadata_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = p.read_string("metadata key #" + std::to_string(i));
    const auto raw_type = p.read<uint32_t>("the type of metadata key '" + formats::printable(key) + "'");
    if (!is_known_value_type(raw_type))
      p.fail("metadata key '" + formats::printable(key) + "' has unknown value type " +
             std::to_string(raw_type) + " (known: 0-12); the file is corrupt or newer than Tandem");
    Value value = p.read_value(static_cast<ValueType>(raw_type), key, 0);
    if (!metadata_index_.emplace(key, metadata_.size()).second)
      p.fail("metadata key '" + formats::printable(key) + "' appears twice; the file is corrupt");
    metadata_.push_back(KeyValue{std::move(key), std::move(value)});
  }

  alignment_ = kDefaultAlignment;
  if (const Value* a = find(kAlignmentKey)) {
    if (!a->is_integer())
      p.fail(std::string(kAlignmentKey) + " is a " + value_type_name(a->type()) + ", expected an integer");
    const bool negative = a->type() == ValueType::INT8 || a->type() == ValueType::INT16 ||
                          a->type() == ValueType::INT32 || a->type() == ValueType::INT64
                              ? a->as_int() < 0
                              : false;
    const uint64_t v = negative ? 0 : a->as_uint();
    if (negative || !formats::is_power_of_two(v))
      p.fail(std::string(kAlignmentKey) + " is " +
             (negative ? std::to_string(a->as_int()) : std::to_string(v)) +
             "; it must be a non-zero power of two");
    alignment_ = v;
  }

  // --- tensor infos ---------------------------------------------------------
  // The smallest info is a 0-length name (8), n_dims (4), type (4), offset (8).
  constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
  if (n_tensors > p.remaining() / kMinTensorInfoBytes)
    p.fail("the header claims " + std::to_string(n_tensors) + " tensors, but only " +
           std::to_string(p.remaining()) + " bytes remain; the file is truncated or corrupt");
  std::vector<uint64_t> offsets;  // relative to the data section, per tensor
  tensors_.reserve(static_cast<size_t>(n_tensors));
  offsets.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorRef t;
    t.name = p.read_string("the name of tensor #" + std::to_string(i));
    const std::string label = tensor_label(t.name);
    const auto n_dims = p.read<uint32_t>("the dimension count of " + label);
    if (n_dims > kMaxDims)
      p.fail(label + " has " + std::to_string(n_dims) + " dimensions; GGUF tensors have at most " +
             std::to_string(kMaxDims) + "; the file is corrupt");
    // ne is innermost first; TensorRef::shape is outermost first.
    int64_t ne[kMaxDims] = {1, 1, 1, 1};
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto raw = p.read<uint64_t>("the dimensions of " + label);
      if (raw == 0 || raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        p.fail(label + " has dimension " + std::to_string(d) + " of size " +
               (raw == 0 ? std::string("0") : std::to_string(static_cast<int64_t>(raw))) +
               "; sizes must be positive; the file is corrupt");
      ne[d] = static_cast<int64_t>(raw);
      if (__builtin_mul_overflow(n_elements, ne[d], &n_elements))
        p.fail(label + " has more elements than fit in 64 bits; the file is corrupt");
    }
    t.shape.assign(std::make_reverse_iterator(ne + n_dims), std::make_reverse_iterator(ne));

    const auto raw_type = p.read<uint32_t>("the type of " + label);
    const auto info = dtype_info(raw_type);
    if (!info)
      p.fail(label + " has unknown ggml type " + std::to_string(raw_type) +
             "; the file is corrupt or uses a type newer than Tandem");
    t.dtype = info->type;
    if (ne[0] % info->block_elems != 0)
      p.fail(label + " has rows of " + std::to_string(ne[0]) + " values, not a whole number of " +
             info->name + " blocks of " + std::to_string(info->block_elems) + "; the file is corrupt");
    int64_t n_bytes = 0;
    if (__builtin_mul_overflow(n_elements / info->block_elems, info->block_bytes, &n_bytes))
      p.fail(label + " is larger than fits in 64 bits; the file is corrupt");
    t.n_bytes = static_cast<uint64_t>(n_bytes);

    const auto offset = p.read<uint64_t>("the data offset of " + label);
    if (offset % alignment_ != 0)
      p.fail(label + " has data offset " + std::to_string(offset) + ", which is not a multiple of the alignment " +
             std::to_string(alignment_) + "; the file is corrupt");
    if (!tensor_index_.emplace(t.name, tensors_.size()).second)
      p.fail(label + " appears twice; the file is corrupt");
    offsets.push_back(offset);
    tensors_.push_back(std::move(t));
  }

  // --- tensor data ----------------------------------------------------------
  uint64_t data_start = 0;
  if (!formats::align_up(p.pos(), alignment_, &data_start))
    p.fail("the tensor data section starts past 2^64 bytes; the alignment is corrupt");
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TensorRef& t = tensors_[i];
    const uint64_t off = offsets[i];
    const bool fits = data_start <= size && off <= size - data_start && t.n_bytes <= size - data_start - off;
    if (!fits) {
      const std::string abs_offset =
          off > UINT64_MAX - data_start ? "past 2^64" : std::to_string(data_start + off);
      p.fail(tensor_label(t.name) + " data [offset " + abs_offset + ", " + std::to_string(t.n_bytes) +
             " bytes] runs past the end of the file (size " + std::to_string(size) +
             "); the file is truncated or corrupt");
    }
    t.data = data + data_start + off;
  }

  // Overlap: sort by start; each tensor must end before the next one starts.
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const size_t a = order[k - 1];
    const size_t b = order[k];
    if (offsets[a] + tensors_[a].n_bytes > offsets[b])
      p.fail(tensor_label(tensors_[a].name) + " [offset " + std::to_string(data_start + offsets[a]) + ", " +
             std::to_string(tensors_[a].n_bytes) + " bytes] overlaps " + tensor_label(tensors_[b].name) +
             " [offset " + std::to_string(data_start + offsets[b]) + "]; the file is corrupt");
  }
}

// --- lookups ------------------------------------------------------------------

const Value* GgufFile::find(std::string_view key) const {
  const auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].value;
}

const Value& GgufFile::get(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) throw Error(path_ + ": missing metadata key '" + std::string(key) + "'");
  return *v;
}

namespace {
[[noreturn]] void wrong_key_type(const std::string& file, std::string_view key, const Value& v,
                                 const char* want) {
  throw Error(file + ": metadata key '" + std::string(key) + "' is " + value_type_name(v.type()) +
              ", expected " + want);
}
}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const Value& v = get(key);
  if (v.type() != ValueType::STRING) wrong_key_type(path_, key, v, "a string");
  return v.as_string();
}

std::optional<std::string> GgufFile::get_string_opt(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_string(key);
}

int64_t GgufFile::get_int(std::string_view key) const {
  const Value& v = get(key);
  if (!v.is_integer()) wrong_key_type(path_, key, v, "an integer");
  try {
    return v.as_int();
  } catch (const Error& e) {
    throw Error(path_ + ": metadata key '" + std::string(key) + "': " + e.what());
  }
}

std::optional<int64_t> GgufFile::get_int_opt(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_int(key);
}

std::optional<double> GgufFile::get_float_opt(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_float() && !v->is_integer()) wrong_key_type(path_, key, *v, "a number");
  return v->as_float();
}

std::optional<bool> GgufFile::get_bool_opt(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type() != ValueType::BOOL) wrong_key_type(path_, key, *v, "a bool");
  return v->as_bool();
}

const Value::Array& GgufFile::get_array(std::string_view key) const {
  const Value& v = get(key);
  if (v.type() != ValueType::ARRAY) wrong_key_type(path_, key, v, "an array");
  return v.as_array();
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const Value::Array& a = get_array(key);
  if (a.elem_type != ValueType::STRING)
    throw Error(path_ + ": metadata key '" + std::string(key) + "' is an array of " + value_type_name(a.elem_type) +
                ", expected an array of strings");
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const Value& item : a.items) out.push_back(item.as_string());
  return out;
}

const TensorRef* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace tandem::gguf
