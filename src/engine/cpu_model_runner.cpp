#include "engine/cpu_model_runner.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "backends/cpu/cpu_ops.h"
#include "common/error.h"
#include "parallel/rank_model.h"

namespace tandem {
namespace {

bool cpu_supports(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0;
}

cpu::WeightMatrix matrix_of(const TensorRef& t, const std::string& path) {
  check(cpu_supports(t.dtype), path + ": tensor '" + t.name + "' has type " + std::string(dtype_name(t.dtype)) +
                                   "; the CPU engine computes with f32, f16, bf16 and q8_0 weights");
  check(t.shape.size() == 2, path + ": tensor '" + t.name + "' is not a matrix");
  return cpu::WeightMatrix{t.dtype, t.shape[0], t.shape[1], t.data};
}

// A 1-D tensor (norm weight, bias) as f32.
std::vector<float> vector_of(const TensorRef& t, const std::string& path) {
  check(cpu_supports(t.dtype) && t.dtype != DType::Q8_0,
        path + ": tensor '" + t.name + "' has type " + std::string(dtype_name(t.dtype)) + ", expected f32, f16 or bf16");
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  cpu::dequantize_row(t.dtype, t.data, out.data(), t.n_elements());
  return out;
}

uint64_t matrix_bytes(const cpu::WeightMatrix& w) {
  return static_cast<uint64_t>(w.rows * dtype_row_bytes(w.dtype, w.cols));
}

// y = x / rms(x) * weight, over one row of n (y may alias x).
void rmsnorm_row(const float* x, const float* weight, float* y, int64_t n, double eps) {
  cpu::rmsnorm(x, weight, static_cast<float>(eps), y, n);
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

CpuModelRunner::CpuModelRunner(const ModelFile& model, ThreadPool& pool, const CpuRunnerOptions& options)
    : config_(model.config()), pool_(pool), options_(options), allocator_(1), kv_(model.config(), 1, 1) {
  load(model.path(), [&](const std::string& name) -> const TensorRef& { return model.tensor(name); });
}

CpuModelRunner::CpuModelRunner(const parallel::RankModel& part, ThreadPool& pool, const CpuRunnerOptions& options)
    : config_(part.config), pool_(pool), options_(options), allocator_(1), kv_(part.config, 1, 1) {
  check(part.tensor_parallel == 1, "internal: the CPU engine runs whole layers (tensor_parallel 1)");
  has_embedding_ = part.has_embedding;
  has_head_ = part.has_lm_head;
  load(part.path, [&](const std::string& name) -> const TensorRef& { return part.tensor(name); });
}

template <typename Lookup>
void CpuModelRunner::load(const std::string& path, Lookup&& tensor) {
  if (options_.max_context <= 0) options_.max_context = config_.context_length;
  check(options_.block_size > 0, "KV block size must be positive");
  if (options_.kv_blocks <= 0)
    options_.kv_blocks = (options_.max_context + options_.block_size - 1) / options_.block_size;
  allocator_ = BlockAllocator(options_.kv_blocks);
  kv_ = KvCache(config_, options_.kv_blocks, options_.block_size);

  if (has_embedding_) token_embd_ = matrix_of(tensor("token_embd.weight"), path);
  if (has_head_) {
    output_ = config_.tied_embeddings ? token_embd_ : matrix_of(tensor("output.weight"), path);
    output_norm_ = vector_of(tensor("output_norm.weight"), path);
    weight_bytes_ = matrix_bytes(output_);
  }
  layers_.resize(static_cast<size_t>(config_.n_layers));
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    Layer& L = layers_[static_cast<size_t>(l)];
    L.wq = matrix_of(tensor(b + "attn_q.weight"), path);
    L.wk = matrix_of(tensor(b + "attn_k.weight"), path);
    L.wv = matrix_of(tensor(b + "attn_v.weight"), path);
    L.wo = matrix_of(tensor(b + "attn_output.weight"), path);
    L.gate = matrix_of(tensor(b + "ffn_gate.weight"), path);
    L.up = matrix_of(tensor(b + "ffn_up.weight"), path);
    L.down = matrix_of(tensor(b + "ffn_down.weight"), path);
    L.attn_norm = vector_of(tensor(b + "attn_norm.weight"), path);
    L.ffn_norm = vector_of(tensor(b + "ffn_norm.weight"), path);
    if (config_.qkv_bias) {
      L.q_bias = vector_of(tensor(b + "attn_q.bias"), path);
      L.k_bias = vector_of(tensor(b + "attn_k.bias"), path);
      L.v_bias = vector_of(tensor(b + "attn_v.bias"), path);
    }
    if (config_.qk_norm) {
      L.q_norm = vector_of(tensor(b + "attn_q_norm.weight"), path);
      L.k_norm = vector_of(tensor(b + "attn_k_norm.weight"), path);
    }
    for (const auto* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) weight_bytes_ += matrix_bytes(*w);
  }
  // Q8_0 matrices regrouped for this CPU's kernels (the same values). The
  // embedding table is read by rows and stays as it is; a tied output head
  // gets its own regrouped copy.
  auto prepare = [&](cpu::WeightMatrix& w) {
    cpu::PackedWeights storage;
    w = cpu::prepare_for_best_kernels(w, storage);
    if (storage.bytes) packed_.push_back(std::move(storage));
  };
  for (Layer& L : layers_)
    for (auto* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) prepare(*w);
  if (has_head_) prepare(output_);

  // Angles in double, stored as f32: the table is exact to f32 rounding at
  // every position, where an f32 pos * inv_freq product would drift.
  const std::vector<double> inv_freq = rope_inv_freq(config_);
  const int64_t half = config_.head_dim / 2;
  rope_cos_.resize(static_cast<size_t>(options_.max_context * half));
  rope_sin_.resize(rope_cos_.size());
  for (int64_t p = 0; p < options_.max_context; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      rope_cos_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
      rope_sin_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
    }
  }
}

void CpuModelRunner::apply_rope(float* vec, int64_t n_heads, int64_t pos) const {
  const int64_t hd = config_.head_dim;
  const int64_t half = hd / 2;
  const float* cs = rope_cos_.data() + pos * half;
  const float* sn = rope_sin_.data() + pos * half;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = vec + h * hd;
    if (config_.rope.style == RopeStyle::HalfSplit) {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * cs[i] - x1 * sn[i];
        v[i + half] = x0 * sn[i] + x1 * cs[i];
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cs[i] - x1 * sn[i];
        v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
      }
    }
  }
}

// For every new token and query head: softmax(q . K[0..pos]) . V[0..pos] over
// the sequence's cached positions (causal: a token sees itself and earlier).
// A task is a token and a KV head: the query heads that share the KV head
// read its cached keys and values once (cpu::dot_rows_group,
// weighted_sum_group), each with the bits it would get alone.
void CpuModelRunner::attention(int64_t layer, std::span<const SequenceChunk> chunks, int64_t n_tokens) {
  const int64_t hd = config_.head_dim;
  const int64_t n_kv_heads = config_.n_kv_heads;
  const int64_t group = config_.n_heads / config_.n_kv_heads;
  const int64_t q_dim = config_.q_dim();
  const int64_t bs = options_.block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(n_tokens * n_kv_heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;       // [group, pos + 1]
    std::vector<const float*> rows;  // the cached keys, then values, of positions 0..pos
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / n_kv_heads;
      const int64_t kvh = task % n_kv_heads;
      const int64_t pos = positions_[static_cast<size_t>(t)];
      const std::vector<int32_t>& table = owner_[static_cast<size_t>(t)]->kv->block_table;
      const float* q = q_.data() + t * q_dim + kvh * group * hd;  // [group, hd]: this KV head's query heads
      const size_t n = static_cast<size_t>(pos + 1);
      scores.resize(static_cast<size_t>(group) * n);
      rows.resize(n);
      for (size_t j = 0; j < n; ++j)
        rows[j] = kv_.key(layer, table[j / static_cast<size_t>(bs)], static_cast<int64_t>(j) % bs) + kvh * hd;
      cpu::dot_rows_group(q, group, rows.data(), pos + 1, hd, scores.data());
      for (int64_t g = 0; g < group; ++g) {
        float* sg = scores.data() + static_cast<size_t>(g) * n;
        float max_score = -std::numeric_limits<float>::infinity();
        for (size_t j = 0; j < n; ++j) {
          sg[j] *= scale;
          max_score = std::max(max_score, sg[j]);
        }
        const float inv_sum = 1.0f / cpu::exp_sum(sg, max_score, pos + 1);
        for (size_t j = 0; j < n; ++j) sg[j] *= inv_sum;
      }
      for (size_t j = 0; j < n; ++j)
        rows[j] = kv_.value(layer, table[j / static_cast<size_t>(bs)], static_cast<int64_t>(j) % bs) + kvh * hd;
      cpu::weighted_sum_group(scores.data(), group, rows.data(), pos + 1, hd,
                              attn_out_.data() + t * q_dim + kvh * group * hd);
    }
  });
}

void CpuModelRunner::matmul_split(const cpu::WeightMatrix& w, const float* x, int64_t n_tokens, int64_t n_generated,
                                  float* y) {
  matmul_split({{&w, y}}, x, n_tokens, n_generated);
}

void CpuModelRunner::matmul_split(std::initializer_list<cpu::MatmulProduct> products, const float* x,
                                  int64_t n_tokens, int64_t n_generated) {
  const std::span<const cpu::MatmulProduct> all(products.begin(), products.size());
  if (n_generated > 0) cpu::matmul_group(all, x, n_generated, pool_, cpu::MatmulPath::Gemv);
  if (n_tokens > n_generated) {
    std::array<cpu::MatmulProduct, 4> prompt;
    check(all.size() <= prompt.size(), "internal: a matmul group of more than 4 matrices");
    for (size_t i = 0; i < all.size(); ++i) prompt[i] = {all[i].w, all[i].y + n_generated * all[i].w->rows};
    cpu::matmul_group(std::span<const cpu::MatmulProduct>(prompt.data(), all.size()),
                      x + n_generated * all.front().w->cols, n_tokens - n_generated, pool_, cpu::MatmulPath::Gemm);
  }
}

const std::vector<float>& CpuModelRunner::forward(std::span<const SequenceChunk> chunks) {
  check(has_embedding_, "internal: a model part without the embedding runs through forward_hidden");
  return run(chunks, nullptr);
}

const std::vector<float>& CpuModelRunner::forward_hidden(std::span<const SequenceChunk> chunks, const float* hidden) {
  check(hidden != nullptr, "internal: forward_hidden without hidden states");
  return run(chunks, hidden);
}

const std::vector<float>& CpuModelRunner::run(std::span<const SequenceChunk> chunks, const float* input) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim(), hd = c.head_dim;
  const int64_t inter = c.intermediate_size;
  const int64_t bs = options_.block_size;

  // Flatten the chunks into T token rows.
  check_step(chunks, options_.max_context, bs);
  int64_t T = 0, n_rows = 0;
  for (const SequenceChunk& ch : chunks) {
    T += static_cast<int64_t>(ch.tokens.size());
    n_rows += ch.all_logits ? static_cast<int64_t>(ch.tokens.size()) : 1;
  }
  positions_.resize(static_cast<size_t>(T));
  owner_.resize(static_cast<size_t>(T));
  grow(x_, T * hidden);
  grow(xn_, T * hidden);
  grow(q_, T * q_dim);
  grow(k_, T * kv_dim);
  grow(v_, T * kv_dim);
  grow(attn_out_, T * q_dim);
  grow(proj_, T * hidden);
  grow(gate_, T * inter);
  grow(up_, T * inter);

  // Compute order: generated tokens, then prompt tokens (see SequenceChunk).
  {
    std::vector<std::pair<const SequenceChunk*, size_t>> order;
    order.reserve(static_cast<size_t>(T));
    compute_index_.assign(static_cast<size_t>(T), 0);  // chunk order -> compute order
    for (int pass = 0; pass < 2; ++pass) {
      size_t flat = 0;
      for (const SequenceChunk& ch : chunks) {
        for (size_t i = 0; i < ch.tokens.size(); ++i, ++flat) {
          const bool generated = ch.kv->n_tokens + static_cast<int64_t>(i) >= ch.prompt_len;
          if (generated != (pass == 0)) continue;
          compute_index_[flat] = static_cast<int64_t>(order.size());
          order.emplace_back(&ch, i);
        }
      }
      if (pass == 0) n_generated_ = static_cast<int64_t>(order.size());
    }
    for (int64_t t = 0; t < T; ++t) {
      const auto& [ch, i] = order[static_cast<size_t>(t)];
      const int32_t id = ch->tokens[i];
      check(id >= 0 && id < c.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                              std::to_string(c.vocab_size));
      positions_[static_cast<size_t>(t)] = ch->kv->n_tokens + static_cast<int64_t>(i);
      owner_[static_cast<size_t>(t)] = ch;
      if (input) {
        std::copy(input + t * hidden, input + (t + 1) * hidden, x_.data() + t * hidden);
      } else {
        const int64_t embd_row = dtype_row_bytes(token_embd_.dtype, hidden);
        cpu::dequantize_row(token_embd_.dtype, static_cast<const uint8_t*>(token_embd_.data) + id * embd_row,
                            x_.data() + t * hidden, hidden);
      }
    }
  }

  auto rows_parallel = [&](int64_t n, auto&& fn) {
    if (n >= 4) {
      pool_.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) fn(i);
      });
    } else {
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
  };

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<size_t>(l)];
    rows_parallel(T, [&](int64_t t) {
      rmsnorm_row(x_.data() + t * hidden, L.attn_norm.data(), xn_.data() + t * hidden, hidden, c.rms_norm_eps);
    });
    matmul_split({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xn_.data(), T, n_generated_);
    rows_parallel(T, [&](int64_t t) {
      float* q = q_.data() + t * q_dim;
      float* k = k_.data() + t * kv_dim;
      float* v = v_.data() + t * kv_dim;
      if (c.qkv_bias) {
        for (int64_t i = 0; i < q_dim; ++i) q[i] += L.q_bias[static_cast<size_t>(i)];
        for (int64_t i = 0; i < kv_dim; ++i) k[i] += L.k_bias[static_cast<size_t>(i)];
        for (int64_t i = 0; i < kv_dim; ++i) v[i] += L.v_bias[static_cast<size_t>(i)];
      }
      if (c.qk_norm) {
        for (int64_t h = 0; h < c.n_heads; ++h) rmsnorm_row(q + h * hd, L.q_norm.data(), q + h * hd, hd, c.rms_norm_eps);
        for (int64_t h = 0; h < c.n_kv_heads; ++h)
          rmsnorm_row(k + h * hd, L.k_norm.data(), k + h * hd, hd, c.rms_norm_eps);
      }
      const int64_t pos = positions_[static_cast<size_t>(t)];
      apply_rope(q, c.n_heads, pos);
      apply_rope(k, c.n_kv_heads, pos);
      const auto& table = owner_[static_cast<size_t>(t)]->kv->block_table;
      const int32_t block = table[static_cast<size_t>(pos / bs)];
      std::copy(k, k + kv_dim, kv_.key(l, block, pos % bs));
      std::copy(v, v + kv_dim, kv_.value(l, block, pos % bs));
    });
    attention(l, chunks, T);
    matmul_split(L.wo, attn_out_.data(), T, n_generated_, proj_.data());
    rows_parallel(T, [&](int64_t t) {
      float* x = x_.data() + t * hidden;
      const float* o = proj_.data() + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) x[i] += o[i];
      rmsnorm_row(x, L.ffn_norm.data(), xn_.data() + t * hidden, hidden, c.rms_norm_eps);
    });
    matmul_split({{&L.gate, gate_.data()}, {&L.up, up_.data()}}, xn_.data(), T, n_generated_);
    rows_parallel(T, [&](int64_t t) {
      float* g = gate_.data() + t * inter;
      const float* u = up_.data() + t * inter;
      cpu::silu_mul(g, u, inter);
    });
    matmul_split(L.down, gate_.data(), T, n_generated_, proj_.data());
    rows_parallel(T, [&](int64_t t) {
      float* x = x_.data() + t * hidden;
      const float* o = proj_.data() + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) x[i] += o[i];
    });
  }

  if (!has_head_) {
    for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
    logits_.clear();
    return logits_;
  }

  // Final norm over the rows whose logits are wanted (in compute order, so
  // that generated and prompt rows again take their own kernels), then the
  // output projection; rows are returned in chunk order.
  std::vector<int64_t> want;  // compute index of each output row, in chunk order
  {
    size_t flat = 0;
    for (const SequenceChunk& ch : chunks) {
      const size_t n = ch.tokens.size();
      for (size_t i = ch.all_logits ? 0 : n - 1; i < n; ++i) want.push_back(compute_index_[flat + i]);
      flat += n;
    }
  }
  std::vector<int64_t> compute_rows(want);  // ascending compute index
  std::sort(compute_rows.begin(), compute_rows.end());
  int64_t n_generated_rows = 0;
  grow(selected_, n_rows * hidden);
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t t = compute_rows[static_cast<size_t>(r)];
    n_generated_rows += t < n_generated_;
    rmsnorm_row(x_.data() + t * hidden, output_norm_.data(), selected_.data() + r * hidden, hidden, c.rms_norm_eps);
  }
  for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
  logits_.resize(static_cast<size_t>(n_rows * c.vocab_size));
  if (want == compute_rows) {
    matmul_split(output_, selected_.data(), n_rows, n_generated_rows, logits_.data());
  } else {
    grow(logits_compute_, n_rows * c.vocab_size);
    matmul_split(output_, selected_.data(), n_rows, n_generated_rows, logits_compute_.data());
    for (int64_t r = 0; r < n_rows; ++r) {
      const int64_t src = std::lower_bound(compute_rows.begin(), compute_rows.end(), want[static_cast<size_t>(r)]) -
                          compute_rows.begin();
      std::copy(logits_compute_.begin() + src * c.vocab_size, logits_compute_.begin() + (src + 1) * c.vocab_size,
                logits_.begin() + r * c.vocab_size);
    }
  }
  return logits_;
}

}  // namespace tandem
