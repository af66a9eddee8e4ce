// A Hugging Face model folder: config.json, the weights (one safetensors file
// or an index naming several shards) and the tokenizer files.
#include <filesystem>
#include <set>

#include "common/error.h"
#include "formats/format_io.h"
#include "formats/safetensors.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMaxJsonFileBytes = uint64_t{256} << 20;

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

nlohmann::json read_json_file(const fs::path& path) {
  const std::string text = formats::read_small_file(path.string(), kMaxJsonFileBytes);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": not valid JSON: " + e.what());
  }
}

// Shard names come from a file; they must name a file inside the folder.
void check_shard_name(const fs::path& index_path, const std::string& shard) {
  const fs::path p(shard);
  bool ok = !shard.empty() && p.is_relative();
  for (const auto& part : p)
    if (part == "..") ok = false;
  if (!ok)
    throw Error(index_path.string() + ": shard name '" + formats::printable(shard) +
                "' is not a file name inside the model folder");
}

}  // namespace

std::unique_ptr<HfModelDir> HfModelDir::open(const std::string& dir) {
  std::unique_ptr<HfModelDir> m(new HfModelDir());
  m->dir_ = dir;
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw Error("'" + dir + "' is not a directory (expected a Hugging Face model folder)");

  const fs::path config_path = root / "config.json";
  if (!is_file(config_path)) throw Error(dir + ": config.json is missing; this is not a Hugging Face model folder");
  m->config_ = read_json_file(config_path);
  if (!m->config_.is_object()) throw Error(config_path.string() + ": expected a JSON object");

  const fs::path index_path = root / "model.safetensors.index.json";
  const fs::path single_path = root / "model.safetensors";
  // shard file name -> tensors the index says it holds (empty for a single file)
  std::map<std::string, std::set<std::string>> shards;
  if (is_file(index_path)) {
    const nlohmann::json index = read_json_file(index_path);
    const auto wm = index.is_object() ? index.find("weight_map") : index.end();
    if (!index.is_object() || wm == index.end() || !wm->is_object())
      throw Error(index_path.string() + ": no \"weight_map\" object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        throw Error(index_path.string() + ": weight_map entry for '" + formats::printable(it.key()) +
                    "' is not a file name");
      const std::string& shard = it.value().get_ref<const std::string&>();
      check_shard_name(index_path, shard);
      shards[shard].insert(it.key());
    }
    if (shards.empty()) throw Error(index_path.string() + ": weight_map is empty");
  } else if (is_file(single_path)) {
    shards["model.safetensors"];
  } else {
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json; the weights are missing "
                      "(Tandem reads safetensors weights)");
  }

  // Shards open in name order, which is their numbering order.
  std::map<std::string, std::string, std::less<>> owner;  // tensor -> shard that holds it
  for (const auto& [shard, expected] : shards) {
    const fs::path shard_path = root / shard;
    if (!is_file(shard_path))
      throw Error(dir + ": shard '" + formats::printable(shard) + "' named by model.safetensors.index.json is missing");
    m->shards_.push_back(SafetensorsFile::open(shard_path.string()));
    for (const TensorRef& t : m->shards_.back()->tensors()) {
      const auto [it, inserted] = owner.emplace(t.name, shard);
      if (!inserted)
        throw Error(dir + ": tensor '" + formats::printable(t.name) + "' appears in both '" + it->second + "' and '" +
                    shard + "'");
      m->index_.emplace(t.name, m->tensors_.size());
      m->tensors_.push_back(t);
    }
    for (const std::string& name : expected) {
      if (owner.find(name) == owner.end() || owner.find(name)->second != shard)
        throw Error(index_path.string() + ": tensor '" + formats::printable(name) + "' is mapped to '" + shard +
                    "', but that shard does not hold it");
    }
  }
  return m;
}

const TensorRef* HfModelDir::find_tensor(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::string HfModelDir::tokenizer_json_path() const {
  const fs::path p = fs::path(dir_) / "tokenizer.json";
  return is_file(p) ? p.string() : std::string();
}

std::string HfModelDir::tokenizer_config_path() const {
  const fs::path p = fs::path(dir_) / "tokenizer_config.json";
  return is_file(p) ? p.string() : std::string();
}

}  // namespace tandem
