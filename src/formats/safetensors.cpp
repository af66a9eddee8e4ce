// Safetensors reader and writer.
//
// Reader checks: the header length fits the file and a sane limit, the header
// is a JSON object of {dtype, shape, data_offsets} entries (plus an optional
// "__metadata__" object of strings), dtypes are ones Tandem computes with,
// each tensor's byte range matches its shape and lies inside the data
// section, no two tensors overlap and no name appears twice.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>

#include "common/error.h"
#include "formats/format_io.h"
#include "formats/safetensors.h"

namespace tandem {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // real headers are a few MiB at most
constexpr int kMaxJsonDepth = 16;                          // a valid header nests 3 deep
constexpr const char* kMetadataKey = "__metadata__";

struct SafetensorsDType {
  const char* name;
  DType dtype;
  uint64_t bytes;
};
constexpr SafetensorsDType kDTypes[] = {
    {"F32", DType::F32, 4}, {"F16", DType::F16, 2}, {"BF16", DType::BF16, 2},
    {"I8", DType::I8, 1},   {"I32", DType::I32, 4}, {"I64", DType::I64, 8},
};

const SafetensorsDType* find_dtype(std::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}
const SafetensorsDType* find_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (t == d.dtype) return &d;
  return nullptr;
}

std::string label(const std::string& name) { return "tensor '" + formats::printable(name) + "'"; }

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->file_ = std::make_unique<MappedFile>(path);
  f->path_ = path;
  f->parse_image(f->file_->data(), f->file_->size());
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size,
                                                        const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->parse_image(data, size);
  return f;
}

void SafetensorsFile::parse_image(const uint8_t* data, size_t size) {
  const auto fail = [&](const std::string& problem) -> void { throw Error(path_ + ": " + problem); };

  if (size < 8)
    fail("is " + std::to_string(size) + " bytes, too small to be a safetensors file (it needs an 8-byte header length)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, 8);
  if (header_len > size - 8)
    fail("header length " + std::to_string(header_len) + " runs past the end of the file (size " +
         std::to_string(size) + "); the file is truncated or not safetensors");
  if (header_len > kMaxHeaderBytes)
    fail("header length " + std::to_string(header_len) + " is over the " + std::to_string(kMaxHeaderBytes >> 20) +
         " MiB limit; the file is corrupt");
  if (header_len < 2 || data[8] != '{')
    fail("the header does not start with a JSON object; this is not a safetensors file");

  // The callback limits nesting (corrupt headers could otherwise nest very
  // deep) and catches duplicate tensor names, which JSON parsing would
  // otherwise resolve silently to the last one.
  std::set<std::string, std::less<>> top_keys;
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= kMaxJsonDepth)
      fail("the header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels; the file is corrupt");
    if (event == E::key && depth == 1 && parsed.is_string()) {
      if (!top_keys.insert(parsed.get<std::string>()).second)
        fail(label(parsed.get<std::string>()) + " appears twice in the header; the file is corrupt");
    }
    return true;
  };
  nlohmann::json header;
  const auto* begin = reinterpret_cast<const char*>(data + 8);
  try {
    header = nlohmann::json::parse(begin, begin + header_len, callback);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("the header is not a JSON object");

  const uint8_t* data_section = data + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == kMetadataKey) {
      if (!entry.is_object()) fail("__metadata__ is not a JSON object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          fail("__metadata__ value for '" + formats::printable(m.key()) + "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = label(name);
    if (!entry.is_object()) fail(what + ": the header entry is not a JSON object");
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) fail(what + " has no \"dtype\" string");
    if (shape_it == entry.end() || !shape_it->is_array()) fail(what + " has no \"shape\" array");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2)
      fail(what + " has no \"data_offsets\" [begin, end] pair");

    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    const SafetensorsDType* dt = find_dtype(dtype_name);
    if (dt == nullptr)
      fail(what + " has dtype '" + formats::printable(dtype_name) +
           "', which Tandem does not read (supported: F32, F16, BF16, I8, I32, I64)");

    TensorRef t;
    t.name = name;
    t.dtype = dt->dtype;
    if (shape_it->size() > 8) fail(what + " has " + std::to_string(shape_it->size()) + " dimensions; the file is corrupt");
    int64_t n_elements = 1;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(what + " has shape " + shape_it->dump() + "; dimensions must be non-negative integers");
      const auto dim = static_cast<int64_t>(d.get<uint64_t>());
      t.shape.push_back(dim);
      if (__builtin_mul_overflow(n_elements, dim, &n_elements))
        fail(what + " has more elements than fit in 64 bits; the file is corrupt");
    }
    for (const auto& o : *offsets_it)
      if (!o.is_number_unsigned()) fail(what + " has data_offsets " + offsets_it->dump() + "; they must be non-negative integers");
    const auto begin_off = (*offsets_it)[0].get<uint64_t>();
    const auto end_off = (*offsets_it)[1].get<uint64_t>();
    if (begin_off > end_off) fail(what + " has data_offsets " + offsets_it->dump() + " with begin after end");
    uint64_t expected = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(n_elements), dt->bytes, &expected) ||
        end_off - begin_off != expected)
      fail(what + " spans " + std::to_string(end_off - begin_off) + " bytes, but its " + dtype_name + " shape " +
           shape_it->dump() + " needs " + std::to_string(static_cast<uint64_t>(n_elements)) + " x " +
           std::to_string(dt->bytes) + " bytes; the file is corrupt");
    if (end_off > data_size)
      fail(what + " data [offset " + std::to_string(8 + header_len + begin_off) + ", " + std::to_string(expected) +
           " bytes] runs past the end of the file (size " + std::to_string(size) + "); the file is truncated or corrupt");
    t.data = data_section + begin_off;
    t.n_bytes = expected;
    tensors_.push_back(std::move(t));
  }

  // File order is data order; the JSON object itself is unordered.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorRef& a, const TensorRef& b) {
    return a.data != b.data ? a.data < b.data : a.name < b.name;
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const TensorRef& a = tensors_[i - 1];
    const TensorRef& b = tensors_[i];
    if (a.data + a.n_bytes > b.data)
      fail(label(a.name) + " [data offsets " + std::to_string(a.data - data_section) + ".." +
           std::to_string(a.data - data_section + a.n_bytes) + "] overlaps " + label(b.name) + " [from " +
           std::to_string(b.data - data_section) + "]; the file is corrupt");
  }
}

// --- writer ---------------------------------------------------------------------

void SafetensorsWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                   const void* data, uint64_t n_bytes) {
  const std::string what = "safetensors tensor '" + name + "'";
  if (name.empty() || name == kMetadataKey) throw Error("safetensors tensor name '" + name + "' is not allowed");
  for (const TensorRef& t : tensors_)
    if (t.name == name) throw Error(what + " was added twice");
  const SafetensorsDType* dt = find_dtype(dtype);
  if (dt == nullptr)
    throw Error(what + " has dtype " + std::string(dtype_name(dtype)) +
                ", which safetensors files written by Tandem cannot hold (F32, F16, BF16, I8, I32, I64)");
  uint64_t n_elements = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(what + " has a negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(n_elements, static_cast<uint64_t>(d), &n_elements))
      throw Error(what + " has too many elements");
  }
  if (n_elements * dt->bytes != n_bytes)
    throw Error(what + " is given " + std::to_string(n_bytes) + " bytes, but its shape needs " +
                std::to_string(n_elements * dt->bytes));
  if (data == nullptr && n_bytes > 0) throw Error(what + " has no data");
  TensorRef t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = static_cast<const uint8_t*>(data);
  t.n_bytes = n_bytes;
  tensors_.push_back(std::move(t));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  uint64_t offset = 0;
  for (const TensorRef& t : tensors_) {
    header[t.name] = {{"dtype", find_dtype(t.dtype)->name},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.n_bytes}}};
    offset += t.n_bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("cannot write '" + path + "': a tensor name or metadata string is not valid UTF-8 (" + e.what() + ")");
  }
  // Pad with spaces (valid JSON whitespace) so that the data section starts
  // 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  formats::AtomicFileWriter out(path);
  const uint64_t header_len = text.size();
  out.write(&header_len, sizeof(header_len));
  out.write(text.data(), text.size());
  for (const TensorRef& t : tensors_) out.write(t.data, t.n_bytes);
  out.commit();
}

}  // namespace tandem
