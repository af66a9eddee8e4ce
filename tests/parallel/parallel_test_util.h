// Synthetic models for the parallel tests: a ModelConfig and its tensors
// (shapes and byte counts only, no data), as ModelFile would list them.
#pragma once

#include <vector>

#include "formats/tensor_ref.h"
#include "models/model_config.h"
#include "models/tensor_names.h"

namespace tandem::parallel::testing {

inline ModelConfig small_config(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t intermediate,
                                int64_t n_layers) {
  ModelConfig c;
  c.arch = Architecture::Llama;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = intermediate;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.context_length = 4096;
  c.layer_kinds.assign(static_cast<size_t>(n_layers), LayerKind::Attention);
  return c;
}

// Matrices in `matrix_dtype`, 1-D tensors in f32; data is null.
inline std::vector<TensorRef> tensors_of(const ModelConfig& c, DType matrix_dtype) {
  std::vector<TensorRef> out;
  for (const ExpectedTensor& e : expected_tensors(c)) {
    TensorRef t;
    t.name = e.name;
    t.shape = e.shape;
    t.dtype = e.shape.size() == 2 ? matrix_dtype : DType::F32;
    const int64_t cols = e.shape.size() == 2 ? e.shape[1] : e.shape[0];
    const int64_t rows = e.shape.size() == 2 ? e.shape[0] : 1;
    t.n_bytes = static_cast<uint64_t>(rows * dtype_row_bytes(t.dtype, cols));
    out.push_back(t);
  }
  return out;
}

}  // namespace tandem::parallel::testing
