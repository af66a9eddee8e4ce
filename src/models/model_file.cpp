#include "models/model_file.h"

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "models/tensor_names.h"

namespace tandem {
namespace {

bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && magic[0] == 'G' && magic[1] == 'G' && magic[2] == 'U' && magic[3] == 'F';
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

ModelFile::~ModelFile() = default;

std::unique_ptr<ModelFile> ModelFile::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::exists(path, ec), "model path '" + path + "' does not exist");
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->path_ = path;
  if (fs::is_directory(path, ec)) {
    m->format_ = ModelFormat::HuggingFace;
    m->hf_ = HfModelDir::open(path);
    m->config_ = config_from_hf(m->hf_->config());
    for (const TensorRef& t : m->hf_->tensors()) {
      auto canonical = canonical_name_from_hf(t.name);
      if (!canonical) continue;
      if (m->config_.tied_embeddings && *canonical == "output.weight") continue;
      TensorRef renamed = t;
      renamed.name = *canonical;
      m->tensors_.push_back(std::move(renamed));
    }
  } else {
    check(has_gguf_magic(path), "'" + path + "' is neither a GGUF file (no GGUF magic) nor a Hugging Face folder");
    m->format_ = ModelFormat::Gguf;
    m->gguf_ = gguf::GgufFile::open(path);
    m->config_ = config_from_gguf(*m->gguf_);
    for (const TensorRef& t : m->gguf_->tensors())
      if (t.name != "rope_freqs.weight") m->tensors_.push_back(t);
  }
  m->index_and_validate();
  return m;
}

std::unique_ptr<ModelFile> ModelFile::in_memory(std::string name, ModelConfig config, std::vector<TensorRef> tensors,
                                                std::shared_ptr<const void> storage) {
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->path_ = std::move(name);
  m->format_ = ModelFormat::Gguf;
  config.validate();
  m->config_ = std::move(config);
  m->tensors_ = std::move(tensors);
  m->storage_ = std::move(storage);
  m->index_and_validate();
  return m;
}

void ModelFile::index_and_validate() {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const bool inserted = index_.emplace(tensors_[i].name, i).second;
    check(inserted, path_ + ": tensor '" + tensors_[i].name + "' appears twice");
  }
  for (const ExpectedTensor& e : expected_tensors(config_)) {
    const TensorRef* t = find(e.name);
    if (t == nullptr) {
      if (e.required) throw Error(path_ + ": missing tensor '" + e.name + "' (architecture " +
                                  architecture_name(config_.arch) + ")");
      continue;
    }
    // A 1-D tensor may be stored as [n] or [1, n].
    std::vector<int64_t> shape = t->shape;
    while (shape.size() > e.shape.size() && shape.front() == 1) shape.erase(shape.begin());
    check(shape == e.shape, path_ + ": tensor '" + e.name + "' has shape " + shape_string(t->shape) +
                                ", expected " + shape_string(e.shape) + " from the model's hyperparameters");
  }
}

const TensorRef* ModelFile::find(std::string_view canonical) const {
  auto it = index_.find(canonical);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorRef& ModelFile::tensor(std::string_view canonical) const {
  const TensorRef* t = find(canonical);
  check(t != nullptr, path_ + ": missing tensor '" + std::string(canonical) + "'");
  return *t;
}

}  // namespace tandem
