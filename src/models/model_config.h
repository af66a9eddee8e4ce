// Hyperparameters of a decoder-only transformer, in one canonical form that
// both GGUF metadata and Hugging Face config.json map onto.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace tandem {
namespace gguf {
class GgufFile;
class GgufWriter;
}  // namespace gguf

enum class Architecture { Llama, Qwen2, Qwen3 };

// Name as GGUF's general.architecture spells it: "llama", "qwen2", "qwen3".
const char* architecture_name(Architecture arch);

// Which pairs of a head's dimensions RoPE rotates together.
enum class RopeStyle {
  HalfSplit,   // (i, i + head_dim/2): Hugging Face layout, GGUF qwen2/qwen3
  Interleaved  // (2i, 2i + 1): GGUF llama, whose q/k rows the converter permuted
};

struct RopeConfig {
  double theta = 10000.0;
  RopeStyle style = RopeStyle::HalfSplit;
  // "none", "linear" (positions divided by factor) or "llama3" (per-frequency
  // smoothing between low_freq_factor and high_freq_factor).
  std::string scaling = "none";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_context = 0;
  // Explicit per-frequency divisors [head_dim/2] (GGUF rope_freqs.weight);
  // when present they replace the llama3 formula.
  std::vector<float> freq_factors;
};

// What a layer keeps between steps. Every layer is Attention today; hybrid
// models add recurrent kinds whose state is fixed-size per sequence.
enum class LayerKind { Attention };

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t context_length = 0;  // the model's trained maximum
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool qkv_bias = false;         // qwen2
  bool qk_norm = false;          // qwen3
  bool tied_embeddings = false;  // output projection reuses token_embd
  std::vector<LayerKind> layer_kinds;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }

  // Throws tandem::Error when a value is missing or inconsistent (heads that
  // do not divide, head_dim odd, ...).
  void validate() const;
};

// PRECONDITIONS: `config` is a parsed config.json. Throws tandem::Error naming
// the key on anything missing or unsupported (model_type, rope scaling type).
ModelConfig config_from_hf(const nlohmann::json& config);
ModelConfig config_from_gguf(const gguf::GgufFile& file);
// Writes general.architecture and the <arch>.* keys config_from_gguf reads.
void write_gguf_config(const ModelConfig& config, gguf::GgufWriter& writer);

// Inverse frequencies [head_dim/2] after scaling: angle(pos, i) = pos * inv_freq[i].
std::vector<double> rope_inv_freq(const ModelConfig& config);
// Per-frequency divisors [head_dim/2] that turn the unscaled inverse
// frequencies into the scaled ones; GGUF carries llama3 scaling this way
// (tensor rope_freqs.weight).
std::vector<float> rope_freq_factors(const ModelConfig& config);

}  // namespace tandem
