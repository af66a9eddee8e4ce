// `tandem-server inspect`: what a model file holds.
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "formats/gguf.h"
#include "models/model_file.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct InspectOptions {
  std::string model;
  bool json = false;
};

int inspect(const InspectOptions& o) {
  const std::string path = resolve_model_path(o.model);
  std::unique_ptr<ModelFile> model = ModelFile::open(path);
  const ModelConfig& c = model->config();
  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // dtype -> (count, bytes)
  uint64_t total_bytes = 0;
  int64_t total_params = 0;
  for (const TensorRef& t : model->tensors()) {
    auto& e = by_dtype[std::string(dtype_name(t.dtype))];
    e.first += 1;
    e.second += t.n_bytes;
    total_bytes += t.n_bytes;
    total_params += t.n_elements();
  }
  std::string tokenizer_kind;
  try {
    tokenizer_kind = Tokenizer::load(path)->kind_name();
  } catch (const Error& e) {
    tokenizer_kind = std::string("none (") + e.what() + ")";
  }
  const bool has_template = !chat_template_source(path).empty();
  const char* rope_style = c.rope.style == RopeStyle::HalfSplit ? "half-split" : "interleaved";

  nlohmann::json j = {
      {"path", path},
      {"format", model->format() == ModelFormat::Gguf ? "gguf" : "huggingface"},
      {"architecture", architecture_name(c.arch)},
      {"hyperparameters",
       {{"vocab_size", c.vocab_size},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"n_layers", c.n_layers},
        {"n_heads", c.n_heads},
        {"n_kv_heads", c.n_kv_heads},
        {"head_dim", c.head_dim},
        {"context_length", c.context_length},
        {"rms_norm_eps", c.rms_norm_eps},
        {"rope_theta", c.rope.theta},
        {"rope_style", rope_style},
        {"rope_scaling", c.rope.freq_factors.empty() ? c.rope.scaling : "frequency factors"},
        {"qkv_bias", c.qkv_bias},
        {"qk_norm", c.qk_norm},
        {"tied_embeddings", c.tied_embeddings}}},
      {"tensor_count", model->tensors().size()},
      {"parameters", total_params},
      {"bytes", total_bytes},
      {"tokenizer", tokenizer_kind},
      {"chat_template", has_template}};
  if (model->gguf() != nullptr) j["gguf_version"] = model->gguf()->version();
  for (const auto& [name, e] : by_dtype) j["bytes_by_dtype"][name] = {{"tensors", e.first}, {"bytes", e.second}};

  if (o.json) {
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("path:            %s\n", path.c_str());
  std::printf("format:          %s\n", j["format"].get<std::string>().c_str());
  std::printf("architecture:    %s\n", architecture_name(c.arch));
  for (const auto& [k, v] : j["hyperparameters"].items()) std::printf("  %-16s %s\n", k.c_str(), v.dump().c_str());
  std::printf("tensors:         %zu (%.3f B parameters, %.2f GiB)\n", model->tensors().size(),
              static_cast<double>(total_params) / 1e9, static_cast<double>(total_bytes) / (1ull << 30));
  for (const auto& [name, e] : by_dtype)
    std::printf("  %-6s %5lld tensors %10.2f MiB\n", name.c_str(), static_cast<long long>(e.first),
                static_cast<double>(e.second) / (1 << 20));
  std::printf("tokenizer:       %s\n", tokenizer_kind.c_str());
  std::printf("chat template:   %s\n", has_template ? "yes" : "no");
  return 0;
}

}  // namespace

Action add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a model's architecture, tensors and tokenizer");
  cmd->add_option("-m,--model", o->model, "GGUF file or Hugging Face folder");
  cmd->add_flag("--json", o->json, "Print JSON");
  return [o] { return inspect(*o); };
}

}  // namespace tandem::cli
