#include "models/model_config.h"

#include <cmath>
#include <numbers>

#include "common/error.h"
#include "formats/gguf.h"

namespace tandem {

const char* architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::Llama: return "llama";
    case Architecture::Qwen2: return "qwen2";
    case Architecture::Qwen3: return "qwen3";
  }
  return "?";
}

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) {
    check(v > 0, std::string("model config: ") + name + " must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  check(n_heads % n_kv_heads == 0, "model config: num_attention_heads (" + std::to_string(n_heads) +
                                       ") is not a multiple of num_key_value_heads (" +
                                       std::to_string(n_kv_heads) + ")");
  check(head_dim % 2 == 0, "model config: head_dim must be even for RoPE, got " + std::to_string(head_dim));
  check(rms_norm_eps > 0, "model config: rms_norm_eps must be positive");
  check(rope.theta > 0, "model config: rope_theta must be positive");
  check(rope.freq_factors.empty() || static_cast<int64_t>(rope.freq_factors.size()) == head_dim / 2,
        "model config: rope frequency factors must have head_dim/2 = " + std::to_string(head_dim / 2) +
            " entries, got " + std::to_string(rope.freq_factors.size()));
  check(static_cast<int64_t>(layer_kinds.size()) == n_layers, "model config: layer kinds do not match layer count");
}

namespace {

template <typename T>
T json_get(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  check(it != j.end() && !it->is_null(), std::string("config.json: missing key '") + key + "'");
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(std::string("config.json: key '") + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

template <typename T>
T json_get_or(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(std::string("config.json: key '") + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

void parse_hf_rope(const nlohmann::json& config, RopeConfig& rope) {
  // Newer configs hold everything in rope_parameters; older ones use
  // rope_theta + rope_scaling.
  nlohmann::json params = config.value("rope_parameters", nlohmann::json());
  if (!params.is_object()) params = config.value("rope_scaling", nlohmann::json());
  rope.theta = json_get_or<double>(config, "rope_theta", 10000.0);
  if (params.is_object() && params.contains("rope_theta")) rope.theta = json_get<double>(params, "rope_theta");
  if (!params.is_object()) return;
  std::string type = json_get_or<std::string>(params, "rope_type", json_get_or<std::string>(params, "type", "default"));
  if (type == "default") return;
  if (type == "linear") {
    rope.scaling = "linear";
    rope.factor = json_get<double>(params, "factor");
  } else if (type == "llama3") {
    rope.scaling = "llama3";
    rope.factor = json_get<double>(params, "factor");
    rope.low_freq_factor = json_get<double>(params, "low_freq_factor");
    rope.high_freq_factor = json_get<double>(params, "high_freq_factor");
    rope.original_context = json_get<int64_t>(params, "original_max_position_embeddings");
  } else {
    throw Error("config.json: rope scaling type '" + type + "' is not supported (supported: default, linear, llama3)");
  }
}

}  // namespace

ModelConfig config_from_hf(const nlohmann::json& j) {
  check(j.is_object(), "config.json: expected a JSON object");
  ModelConfig c;
  const std::string model_type = json_get<std::string>(j, "model_type");
  if (model_type == "llama" || model_type == "mistral") {
    c.arch = Architecture::Llama;
  } else if (model_type == "qwen2") {
    c.arch = Architecture::Qwen2;
  } else if (model_type == "qwen3") {
    c.arch = Architecture::Qwen3;
  } else {
    throw Error("config.json: model_type '" + model_type + "' is not supported (supported: llama, mistral, qwen2, qwen3)");
  }
  c.vocab_size = json_get<int64_t>(j, "vocab_size");
  c.hidden_size = json_get<int64_t>(j, "hidden_size");
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size");
  c.n_layers = json_get<int64_t>(j, "num_hidden_layers");
  c.n_heads = json_get<int64_t>(j, "num_attention_heads");
  c.n_kv_heads = json_get_or<int64_t>(j, "num_key_value_heads", c.n_heads);
  c.head_dim = json_get_or<int64_t>(j, "head_dim", c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.context_length = json_get_or<int64_t>(j, "max_position_embeddings", 4096);
  c.rms_norm_eps = json_get_or<double>(j, "rms_norm_eps", 1e-6);
  c.tied_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false);
  c.qkv_bias = c.arch == Architecture::Qwen2 || json_get_or<bool>(j, "attention_bias", false);
  c.qk_norm = c.arch == Architecture::Qwen3;
  const std::string act = json_get_or<std::string>(j, "hidden_act", "silu");
  check(act == "silu", "config.json: hidden_act '" + act + "' is not supported (supported: silu)");
  check(!json_get_or<bool>(j, "mlp_bias", false), "config.json: mlp_bias=true is not supported");
  if (json_get_or<bool>(j, "use_sliding_window", false))
    throw Error("config.json: use_sliding_window=true is not supported");
  parse_hf_rope(j, c.rope);
  c.rope.style = RopeStyle::HalfSplit;
  c.layer_kinds.assign(static_cast<size_t>(std::max<int64_t>(c.n_layers, 0)), LayerKind::Attention);
  c.validate();
  return c;
}

ModelConfig config_from_gguf(const gguf::GgufFile& f) {
  ModelConfig c;
  const std::string arch = f.get_string("general.architecture");
  if (arch == "llama") {
    c.arch = Architecture::Llama;
  } else if (arch == "qwen2") {
    c.arch = Architecture::Qwen2;
  } else if (arch == "qwen3") {
    c.arch = Architecture::Qwen3;
  } else {
    throw Error(f.path() + ": architecture '" + arch + "' is not supported (supported: llama, qwen2, qwen3)");
  }
  const std::string p = arch + ".";
  c.hidden_size = f.get_int(p + "embedding_length");
  c.intermediate_size = f.get_int(p + "feed_forward_length");
  c.n_layers = f.get_int(p + "block_count");
  c.n_heads = f.get_int(p + "attention.head_count");
  c.n_kv_heads = f.get_int_opt(p + "attention.head_count_kv").value_or(c.n_heads);
  c.head_dim = f.get_int_opt(p + "attention.key_length").value_or(c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.context_length = f.get_int_opt(p + "context_length").value_or(4096);
  c.rms_norm_eps = f.get_float_opt(p + "attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope.theta = f.get_float_opt(p + "rope.freq_base").value_or(10000.0);
  c.rope.style = c.arch == Architecture::Llama ? RopeStyle::Interleaved : RopeStyle::HalfSplit;
  if (auto type = f.get_string_opt(p + "rope.scaling.type"); type && *type != "none") {
    if (*type != "linear")
      throw Error(f.path() + ": rope scaling type '" + *type + "' is not supported (supported: none, linear)");
    const double factor = f.get_float_opt(p + "rope.scaling.factor").value_or(1.0);
    if (factor != 1.0) {
      c.rope.scaling = "linear";
      c.rope.factor = factor;
    }
  }
  if (const TensorRef* freqs = f.find_tensor("rope_freqs.weight")) {
    check(freqs->dtype == DType::F32, f.path() + ": rope_freqs.weight must be f32");
    const auto* v = reinterpret_cast<const float*>(freqs->data);
    c.rope.freq_factors.assign(v, v + freqs->n_elements());
  }
  const TensorRef* embd = f.find_tensor("token_embd.weight");
  check(embd != nullptr && embd->shape.size() == 2, f.path() + ": missing tensor 'token_embd.weight'");
  c.vocab_size = f.get_int_opt(p + "vocab_size").value_or(embd->shape[0]);
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  c.layer_kinds.assign(static_cast<size_t>(std::max<int64_t>(c.n_layers, 0)), LayerKind::Attention);
  c.validate();
  return c;
}

void write_gguf_config(const ModelConfig& c, gguf::GgufWriter& w) {
  using gguf::Value;
  const std::string arch = architecture_name(c.arch);
  const std::string p = arch + ".";
  w.set("general.architecture", Value::string(arch));
  w.set(p + "vocab_size", Value::u32(static_cast<uint32_t>(c.vocab_size)));
  w.set(p + "context_length", Value::u32(static_cast<uint32_t>(c.context_length)));
  w.set(p + "embedding_length", Value::u32(static_cast<uint32_t>(c.hidden_size)));
  w.set(p + "feed_forward_length", Value::u32(static_cast<uint32_t>(c.intermediate_size)));
  w.set(p + "block_count", Value::u32(static_cast<uint32_t>(c.n_layers)));
  w.set(p + "attention.head_count", Value::u32(static_cast<uint32_t>(c.n_heads)));
  w.set(p + "attention.head_count_kv", Value::u32(static_cast<uint32_t>(c.n_kv_heads)));
  w.set(p + "attention.key_length", Value::u32(static_cast<uint32_t>(c.head_dim)));
  w.set(p + "attention.value_length", Value::u32(static_cast<uint32_t>(c.head_dim)));
  w.set(p + "attention.layer_norm_rms_epsilon", Value::f32(static_cast<float>(c.rms_norm_eps)));
  w.set(p + "rope.freq_base", Value::f32(static_cast<float>(c.rope.theta)));
  w.set(p + "rope.dimension_count", Value::u32(static_cast<uint32_t>(c.head_dim)));
  if (c.rope.scaling == "linear") {
    w.set(p + "rope.scaling.type", Value::string("linear"));
    w.set(p + "rope.scaling.factor", Value::f32(static_cast<float>(c.rope.factor)));
  }
  // llama3 scaling travels as the rope_freqs.weight tensor, written by the converter.
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[static_cast<size_t>(i)] = 1.0 / std::pow(c.rope.theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
  const RopeConfig& r = c.rope;
  if (!r.freq_factors.empty()) {
    for (int64_t i = 0; i < half; ++i) inv[static_cast<size_t>(i)] /= r.freq_factors[static_cast<size_t>(i)];
  } else if (r.scaling == "linear") {
    for (double& f : inv) f /= r.factor;
  } else if (r.scaling == "llama3") {
    const double low_wavelen = static_cast<double>(r.original_context) / r.low_freq_factor;
    const double high_wavelen = static_cast<double>(r.original_context) / r.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (static_cast<double>(r.original_context) / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1.0 - smooth) * f / r.factor + smooth * f;
      }
    }
  }
  return inv;
}

std::vector<float> rope_freq_factors(const ModelConfig& c) {
  ModelConfig unscaled = c;
  unscaled.rope.scaling = "none";
  unscaled.rope.freq_factors.clear();
  const std::vector<double> base = rope_inv_freq(unscaled);
  const std::vector<double> scaled = rope_inv_freq(c);
  std::vector<float> out(base.size());
  for (size_t i = 0; i < base.size(); ++i) out[i] = static_cast<float>(base[i] / scaled[i]);
  return out;
}

}  // namespace tandem
