// A model opened from disk: its canonical config and its weights, mapped in
// place. Opens GGUF files and Hugging Face folders alike.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor_ref.h"
#include "models/model_config.h"

namespace tandem {
namespace gguf {
class GgufFile;
}
class HfModelDir;

enum class ModelFormat { Gguf, HuggingFace };

class ModelFile {
 public:
  // `path` is a .gguf file (recognised by its magic) or a Hugging Face folder.
  // Throws tandem::Error naming the path on a missing or corrupt file, an
  // unknown architecture, a missing tensor or a tensor of the wrong shape.
  static std::unique_ptr<ModelFile> open(const std::string& path);
  // A model held in memory: `tensors` (canonical names) point into
  // `storage`, which the ModelFile keeps alive. `name` stands for the path
  // in messages. Validated as open() validates a file. For synthetic
  // benchmark models (make_synth_model_in_memory).
  static std::unique_ptr<ModelFile> in_memory(std::string name, ModelConfig config, std::vector<TensorRef> tensors,
                                              std::shared_ptr<const void> storage);
  ~ModelFile();

  const std::string& path() const { return path_; }
  ModelFormat format() const { return format_; }
  const ModelConfig& config() const { return config_; }
  // Present for GGUF files / Hugging Face folders respectively.
  const gguf::GgufFile* gguf() const { return gguf_.get(); }
  const HfModelDir* hf() const { return hf_.get(); }

  // All tensors under canonical names, in the source's order.
  const std::vector<TensorRef>& tensors() const { return tensors_; }
  const TensorRef* find(std::string_view canonical) const;
  // Throws when absent.
  const TensorRef& tensor(std::string_view canonical) const;

 private:
  ModelFile() = default;
  void index_and_validate();

  std::string path_;
  ModelFormat format_ = ModelFormat::Gguf;
  ModelConfig config_;
  std::unique_ptr<gguf::GgufFile> gguf_;
  std::unique_ptr<HfModelDir> hf_;
  std::vector<TensorRef> tensors_;
  std::shared_ptr<const void> storage_;  // in_memory models' bytes
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace tandem
