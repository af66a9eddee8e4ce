// One canonical set of tensor names (GGUF's), and the map from Hugging Face
// names onto it. Everything past the loaders speaks canonical names only.
//
//   token_embd.weight            [vocab, hidden]
//   output_norm.weight           [hidden]
//   output.weight                [vocab, hidden]     (absent when tied)
//   blk.N.attn_norm.weight       [hidden]
//   blk.N.attn_q.weight          [n_heads*head_dim, hidden]     (+ .bias for qwen2)
//   blk.N.attn_k.weight          [n_kv_heads*head_dim, hidden]  (+ .bias)
//   blk.N.attn_v.weight          [n_kv_heads*head_dim, hidden]  (+ .bias)
//   blk.N.attn_q_norm.weight     [head_dim]          (qwen3)
//   blk.N.attn_k_norm.weight     [head_dim]          (qwen3)
//   blk.N.attn_output.weight     [hidden, n_heads*head_dim]
//   blk.N.ffn_norm.weight        [hidden]
//   blk.N.ffn_gate.weight        [intermediate, hidden]
//   blk.N.ffn_up.weight          [intermediate, hidden]
//   blk.N.ffn_down.weight        [hidden, intermediate]
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/model_config.h"

namespace tandem {

// Canonical name of a Hugging Face tensor name, or nullopt for tensors the
// engine does not use (e.g. rotary_emb.inv_freq).
std::optional<std::string> canonical_name_from_hf(std::string_view hf_name);
// The inverse, for writing Hugging Face folders in tests and tools.
std::string hf_name_from_canonical(std::string_view canonical);

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;  // row-major
  bool required = true;
};
// Every tensor the architecture needs, with its shape.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

}  // namespace tandem
