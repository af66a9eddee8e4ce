// Safetensors files and Hugging Face model folders.
//
// Safetensors layout: u64 header_len (LE) | JSON header | data. The header maps
// tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the
// data section, plus an optional "__metadata__" object of strings.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/mapped_file.h"
#include "formats/tensor_ref.h"

namespace tandem {

class SafetensorsFile {
 public:
  // Throws tandem::Error naming the file on a bad header, an unsupported
  // dtype (supported: F32, F16, BF16, and I8/I32/I64 for non-weight tensors),
  // or offsets outside the file.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& name);

  const std::vector<TensorRef>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  void parse_image(const uint8_t* data, size_t size);
  std::unique_ptr<MappedFile> file_;
  std::string path_;
  std::vector<TensorRef> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a single-file safetensors (used by tests and tools). Bytes are not copied.
class SafetensorsWriter {
 public:
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                  uint64_t n_bytes);
  // Adds a "__metadata__" entry (string to string, as the format allows).
  void set_metadata(const std::string& key, const std::string& value);
  // Writes through a temporary file renamed into place; throws tandem::Error
  // naming `path` on any failure.
  void write(const std::string& path) const;

 private:
  std::vector<TensorRef> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face model folder: config.json, model.safetensors or
// model.safetensors.index.json + shards, tokenizer.json, tokenizer_config.json.
class HfModelDir {
 public:
  // Throws tandem::Error when config.json is missing or malformed, a shard
  // named by the index is missing, or a tensor appears twice.
  static std::unique_ptr<HfModelDir> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  // All tensors of all shards.
  const std::vector<TensorRef>& tensors() const { return tensors_; }
  const TensorRef* find_tensor(std::string_view name) const;
  // Empty when the file is absent.
  std::string tokenizer_json_path() const;
  std::string tokenizer_config_path() const;

 private:
  HfModelDir() = default;
  std::string dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorRef> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace tandem
