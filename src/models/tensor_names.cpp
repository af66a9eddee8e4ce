#include "models/tensor_names.h"

#include <array>
#include <charconv>
#include <utility>

namespace tandem {
namespace {

// (Hugging Face suffix inside model.layers.N., canonical suffix inside blk.N.)
constexpr std::array<std::pair<std::string_view, std::string_view>, 15> kLayerNames = {{
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
}};

constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGlobalNames = {{
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
}};

// Splits "<prefix>N.<rest>" into (N, rest).
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  int64_t layer = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + dot, layer);
  if (ec != std::errc() || ptr != name.data() + dot) return std::nullopt;
  return std::make_pair(layer, name.substr(dot + 1));
}

}  // namespace

std::optional<std::string> canonical_name_from_hf(std::string_view hf_name) {
  for (const auto& [hf, canonical] : kGlobalNames)
    if (hf_name == hf) return std::string(canonical);
  if (auto split = split_layer(hf_name, "model.layers.")) {
    for (const auto& [hf, canonical] : kLayerNames)
      if (split->second == hf) return "blk." + std::to_string(split->first) + "." + std::string(canonical);
  }
  return std::nullopt;
}

std::string hf_name_from_canonical(std::string_view canonical) {
  for (const auto& [hf, c] : kGlobalNames)
    if (canonical == c) return std::string(hf);
  if (auto split = split_layer(canonical, "blk.")) {
    for (const auto& [hf, c] : kLayerNames)
      if (split->second == c) return "model.layers." + std::to_string(split->first) + "." + std::string(hf);
  }
  return std::string(canonical);
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  out.push_back({"token_embd.weight", {c.vocab_size, c.hidden_size}});
  out.push_back({"output_norm.weight", {c.hidden_size}});
  if (!c.tied_embeddings) out.push_back({"output.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    out.push_back({b + "attn_norm.weight", {c.hidden_size}});
    out.push_back({b + "attn_q.weight", {c.q_dim(), c.hidden_size}});
    out.push_back({b + "attn_k.weight", {c.kv_dim(), c.hidden_size}});
    out.push_back({b + "attn_v.weight", {c.kv_dim(), c.hidden_size}});
    if (c.qkv_bias) {
      out.push_back({b + "attn_q.bias", {c.q_dim()}});
      out.push_back({b + "attn_k.bias", {c.kv_dim()}});
      out.push_back({b + "attn_v.bias", {c.kv_dim()}});
    }
    if (c.qk_norm) {
      out.push_back({b + "attn_q_norm.weight", {c.head_dim}});
      out.push_back({b + "attn_k_norm.weight", {c.head_dim}});
    }
    out.push_back({b + "attn_output.weight", {c.hidden_size, c.q_dim()}});
    out.push_back({b + "ffn_norm.weight", {c.hidden_size}});
    out.push_back({b + "ffn_gate.weight", {c.intermediate_size, c.hidden_size}});
    out.push_back({b + "ffn_up.weight", {c.intermediate_size, c.hidden_size}});
    out.push_back({b + "ffn_down.weight", {c.hidden_size, c.intermediate_size}});
  }
  return out;
}

}  // namespace tandem
