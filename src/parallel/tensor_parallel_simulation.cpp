#include "parallel/tensor_parallel_simulation.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/cpu_ops.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "backends/cpu/q8_0_rows8.h"
#include "parallel/in_process_communicator.h"
#include "parallel/parallel_plan.h"
#include "parallel/weight_sharding.h"

namespace tandem::parallel {
namespace {

// A rank's matrix shard, in the layout the CPU engine computes it with
// (Q8_0 regrouped by 8 rows where the kernels take it), so that the
// simulation runs the engine's kernels.
struct Matrix {
  TensorShard shard;
  cpu::PackedWeights packed;
  cpu::WeightMatrix w;
};

// What one simulated GPU holds.
struct RankWeights {
  struct Layer {
    Matrix wq, wk, wv;      // [heads_per_gpu * head_dim, hidden], [kv_heads_per_gpu * head_dim, hidden] x2
    Matrix wo;              // [hidden, heads_per_gpu * head_dim]
    Matrix gate, up;        // [ffn_per_gpu, hidden]
    Matrix down;            // [hidden, ffn_per_gpu]
    std::vector<float> q_bias, k_bias, v_bias;  // the rank's rows (qwen2)
    std::vector<float> attn_norm, ffn_norm;     // [hidden], replicated
    std::vector<float> q_norm, k_norm;          // [head_dim], replicated (qwen3)
  };
  int64_t stage = 0;
  int64_t tp_rank = 0;
  Range layers;
  std::vector<Layer> layer;  // the stage's layers, in order
  const TensorRef* token_embd = nullptr;  // first stage only (replicated)
  std::vector<float> output_norm;         // last stage only
  Matrix lm_head;                         // last stage only: [vocab rows of this rank, hidden]
};

std::vector<float> vector_of(const TensorShard& s) {
  check(s.ref.dtype == DType::F32 || s.ref.dtype == DType::F16 || s.ref.dtype == DType::BF16,
        "tensor '" + s.ref.name + "' has type " + std::string(dtype_name(s.ref.dtype)) + ", expected f32, f16 or bf16");
  std::vector<float> out(static_cast<size_t>(s.ref.n_elements()));
  cpu::dequantize_row(s.ref.dtype, s.ref.data, out.data(), s.ref.n_elements());
  return out;
}

Matrix matrix_of(TensorShard s) {
  Matrix m;
  m.shard = std::move(s);  // a copied shard's bytes do not move with it
  m.w = cpu::prepare_for_best_kernels(
      cpu::WeightMatrix{m.shard.ref.dtype, m.shard.ref.shape[0], m.shard.ref.shape[1], m.shard.ref.data}, m.packed);
  return m;
}

RankWeights shard_model(const ModelFile& model, const ParallelPlan& plan, int64_t stage, int64_t tp_rank) {
  const ModelConfig& c = model.config();
  const int64_t tp = plan.config.tensor_parallel;
  auto shard = [&](const std::string& name) {
    return shard_tensor(model.tensor(name), shard_rule(name, c), tp_rank, tp);
  };
  RankWeights w;
  w.stage = stage;
  w.tp_rank = tp_rank;
  const StagePlan& st = plan.stages[static_cast<size_t>(stage)];
  w.layers = st.layers;
  for (int64_t l = st.layers.begin; l < st.layers.end; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    RankWeights::Layer L;
    L.wq = matrix_of(shard(b + "attn_q.weight"));
    L.wk = matrix_of(shard(b + "attn_k.weight"));
    L.wv = matrix_of(shard(b + "attn_v.weight"));
    L.wo = matrix_of(shard(b + "attn_output.weight"));
    L.gate = matrix_of(shard(b + "ffn_gate.weight"));
    L.up = matrix_of(shard(b + "ffn_up.weight"));
    L.down = matrix_of(shard(b + "ffn_down.weight"));
    L.attn_norm = vector_of(shard(b + "attn_norm.weight"));
    L.ffn_norm = vector_of(shard(b + "ffn_norm.weight"));
    if (c.qkv_bias) {
      L.q_bias = vector_of(shard(b + "attn_q.bias"));
      L.k_bias = vector_of(shard(b + "attn_k.bias"));
      L.v_bias = vector_of(shard(b + "attn_v.bias"));
    }
    if (c.qk_norm) {
      L.q_norm = vector_of(shard(b + "attn_q_norm.weight"));
      L.k_norm = vector_of(shard(b + "attn_k_norm.weight"));
    }
    w.layer.push_back(std::move(L));
  }
  if (st.has_embedding) w.token_embd = &model.tensor("token_embd.weight");
  if (st.has_lm_head) {
    w.output_norm = vector_of(shard("output_norm.weight"));
    const char* head = c.tied_embeddings ? "token_embd.weight" : "output.weight";
    w.lm_head = matrix_of(shard_tensor(model.tensor(head), lm_head_rule(), tp_rank, tp));
  }
  return w;
}

// Everything the ranks share, read-only.
struct Shared {
  const ModelConfig& c;
  const ParallelPlan& plan;
  std::span<const int32_t> tokens;
  cpu::MatmulPath path;
  std::vector<float> rope_cos, rope_sin;  // [T, head_dim/2]
};

void apply_rope(const Shared& s, float* vec, int64_t n_heads, int64_t pos) {
  const int64_t hd = s.c.head_dim, half = hd / 2;
  const float* cs = s.rope_cos.data() + pos * half;
  const float* sn = s.rope_sin.data() + pos * half;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = vec + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = s.c.rope.style == RopeStyle::HalfSplit ? i : 2 * i;
      const int64_t b = s.c.rope.style == RopeStyle::HalfSplit ? i + half : 2 * i + 1;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * cs[i] - x1 * sn[i];
      v[b] = x0 * sn[i] + x1 * cs[i];
    }
  }
}

// The forward pass of one simulated GPU. `tp` spans the GPUs of its stage,
// `world` all GPUs (for the pipeline's send/recv). Fills `logits` [T, vocab]
// on the last stage's tensor-parallel rank 0.
void run_rank(const Shared& s, const RankWeights& w, Communicator& tp, Communicator& world,
              std::vector<float>* logits) {
  const ModelConfig& c = s.c;
  const ParallelConfig& pc = s.plan.config;
  const int64_t T = static_cast<int64_t>(s.tokens.size());
  const int64_t H = c.hidden_size, hd = c.head_dim;
  const int64_t hq = s.plan.heads_per_gpu, hkv = s.plan.kv_heads_per_gpu;
  const int64_t qd = hq * hd, kd = hkv * hd, ffn = s.plan.ffn_per_gpu;
  const int64_t group = hq / hkv;  // query heads per KV head, the same on every rank
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ThreadPool pool(1);
  auto matmul = [&](const Matrix& m, const float* x, float* y) { cpu::matmul(m.w, x, T, y, pool, s.path); };

  std::vector<float> x(static_cast<size_t>(T * H)), xn(x.size()), proj(x.size());  // [T, hidden]
  std::vector<float> q(static_cast<size_t>(T * qd)), att(q.size());                   // [T, qd]
  std::vector<float> k(static_cast<size_t>(T * kd)), v(k.size());                     // [T, kd]
  std::vector<float> gate(static_cast<size_t>(T * ffn)), up(gate.size());             // [T, ffn]
  std::vector<float> scores(static_cast<size_t>(T));
  std::vector<const float*> kv_rows(static_cast<size_t>(T));  // keys, then values, of positions 0..t

  if (w.stage == 0) {
    const int64_t row = dtype_row_bytes(w.token_embd->dtype, H);
    for (int64_t t = 0; t < T; ++t)
      cpu::dequantize_row(w.token_embd->dtype, w.token_embd->data + s.tokens[static_cast<size_t>(t)] * row,
                          x.data() + t * H, H);
  } else {
    world.recv(x.data(), T * H, static_cast<int>(global_rank(pc, w.stage - 1, w.tp_rank)));
  }

  for (const RankWeights::Layer& L : w.layer) {
    for (int64_t t = 0; t < T; ++t) cpu::rmsnorm(x.data() + t * H, L.attn_norm.data(), eps, xn.data() + t * H, H);
    matmul(L.wq, xn.data(), q.data());
    matmul(L.wk, xn.data(), k.data());
    matmul(L.wv, xn.data(), v.data());
    for (int64_t t = 0; t < T; ++t) {
      float* qt = q.data() + t * qd;
      float* kt = k.data() + t * kd;
      float* vt = v.data() + t * kd;
      if (c.qkv_bias) {
        for (int64_t i = 0; i < qd; ++i) qt[i] += L.q_bias[static_cast<size_t>(i)];
        for (int64_t i = 0; i < kd; ++i) kt[i] += L.k_bias[static_cast<size_t>(i)];
        for (int64_t i = 0; i < kd; ++i) vt[i] += L.v_bias[static_cast<size_t>(i)];
      }
      if (c.qk_norm) {
        for (int64_t h = 0; h < hq; ++h) cpu::rmsnorm(qt + h * hd, L.q_norm.data(), eps, qt + h * hd, hd);
        for (int64_t h = 0; h < hkv; ++h) cpu::rmsnorm(kt + h * hd, L.k_norm.data(), eps, kt + h * hd, hd);
      }
      apply_rope(s, qt, hq, t);
      apply_rope(s, kt, hkv, t);
    }
    // Causal attention over the rank's own heads: query head h reads KV head
    // h / group, which the same rank holds (whole heads per rank).
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < hq; ++h) {
        const float* qh = q.data() + t * qd + h * hd;
        const int64_t kvh = h / group;
        // As the engine's attention (cpu_model_runner.cpp), with the same kernels.
        for (int64_t j = 0; j <= t; ++j) kv_rows[static_cast<size_t>(j)] = k.data() + j * kd + kvh * hd;
        cpu::dot_rows(qh, kv_rows.data(), t + 1, hd, scores.data());
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          scores[static_cast<size_t>(j)] *= scale;
          max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
        }
        const float inv_sum = 1.0f / cpu::exp_sum(scores.data(), max_score, t + 1);
        for (int64_t j = 0; j <= t; ++j) scores[static_cast<size_t>(j)] *= inv_sum;
        for (int64_t j = 0; j <= t; ++j) kv_rows[static_cast<size_t>(j)] = v.data() + j * kd + kvh * hd;
        cpu::weighted_sum(scores.data(), kv_rows.data(), t + 1, hd, att.data() + t * qd + h * hd);
      }
    }
    // Partial output projection from this rank's heads; the all-reduce sums
    // the ranks' partials into the full projection.
    matmul(L.wo, att.data(), proj.data());
    tp.all_reduce_sum(proj.data(), T * H);
    for (int64_t i = 0; i < T * H; ++i) x[static_cast<size_t>(i)] += proj[static_cast<size_t>(i)];

    for (int64_t t = 0; t < T; ++t) cpu::rmsnorm(x.data() + t * H, L.ffn_norm.data(), eps, xn.data() + t * H, H);
    matmul(L.gate, xn.data(), gate.data());
    matmul(L.up, xn.data(), up.data());
    for (int64_t t = 0; t < T; ++t) cpu::silu_mul(gate.data() + t * ffn, up.data() + t * ffn, ffn);
    matmul(L.down, gate.data(), proj.data());
    tp.all_reduce_sum(proj.data(), T * H);
    for (int64_t i = 0; i < T * H; ++i) x[static_cast<size_t>(i)] += proj[static_cast<size_t>(i)];
  }

  if (w.stage + 1 < pc.pipeline_stages) {
    world.send(x.data(), T * H, static_cast<int>(global_rank(pc, w.stage + 1, w.tp_rank)));
    return;
  }

  // LM head over this rank's vocabulary rows, padded to the largest slice so
  // that every rank gathers the same count.
  for (int64_t t = 0; t < T; ++t) cpu::rmsnorm(x.data() + t * H, w.output_norm.data(), eps, xn.data() + t * H, H);
  const int64_t rows = w.lm_head.shard.range.size(), max_rows = s.plan.max_vocab_per_gpu;
  std::vector<float> local(static_cast<size_t>(T * rows));
  matmul(w.lm_head, xn.data(), local.data());
  std::vector<float> padded(static_cast<size_t>(T * max_rows), 0.0f);  // [T, max_rows]
  for (int64_t t = 0; t < T; ++t) std::copy_n(local.data() + t * rows, rows, padded.data() + t * max_rows);
  std::vector<float> gathered(static_cast<size_t>(pc.tensor_parallel * T * max_rows));  // [tp, T, max_rows]
  tp.all_gather(padded.data(), T * max_rows, gathered.data());
  if (w.tp_rank != 0) return;
  logits->assign(static_cast<size_t>(T * c.vocab_size), 0.0f);
  for (int64_t r = 0; r < pc.tensor_parallel; ++r) {
    const Range vocab = split_evenly(c.vocab_size, pc.tensor_parallel, r);
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(gathered.data() + (r * T + t) * max_rows, vocab.size(), logits->data() + t * c.vocab_size + vocab.begin);
  }
}

}  // namespace

std::vector<float> simulate_parallel_prefill(const ModelFile& model, const ParallelConfig& config,
                                             std::span<const int32_t> tokens, cpu::MatmulPath path) {
  const ModelConfig& c = model.config();
  check(!tokens.empty(), "the simulation needs at least one token");
  for (int32_t id : tokens)
    check(id >= 0 && id < c.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                            std::to_string(c.vocab_size));
  const ParallelPlan plan = plan_parallel(c, model.tensors(), config);
  const int64_t tp = config.tensor_parallel, pp = config.pipeline_stages;

  // Shard everything before any rank starts, so that an error (a weight of
  // the wrong type) is thrown here and no rank waits on a dead peer.
  std::vector<RankWeights> ranks;
  for (int64_t st = 0; st < pp; ++st)
    for (int64_t r = 0; r < tp; ++r) ranks.push_back(shard_model(model, plan, st, r));

  check(path != cpu::MatmulPath::Auto, "internal: the simulation needs an explicit matmul path");
  Shared shared{c, plan, tokens, path, {}, {}};
  const std::vector<double> inv_freq = rope_inv_freq(c);
  const int64_t T = static_cast<int64_t>(tokens.size()), half = c.head_dim / 2;
  shared.rope_cos.resize(static_cast<size_t>(T * half));
  shared.rope_sin.resize(shared.rope_cos.size());
  for (int64_t p = 0; p < T; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      shared.rope_cos[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
      shared.rope_sin[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
    }
  }

  InProcessGroup world_group(static_cast<int>(tp * pp));
  std::vector<std::unique_ptr<InProcessGroup>> stage_groups;
  for (int64_t st = 0; st < pp; ++st) stage_groups.push_back(std::make_unique<InProcessGroup>(static_cast<int>(tp)));

  std::vector<float> logits;
  std::vector<std::exception_ptr> errors(ranks.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ranks.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        const RankWeights& w = ranks[i];
        auto tp_comm = stage_groups[static_cast<size_t>(w.stage)]->communicator(static_cast<int>(w.tp_rank));
        auto world_comm = world_group.communicator(static_cast<int>(global_rank(config, w.stage, w.tp_rank)));
        run_rank(shared, w, *tp_comm, *world_comm, &logits);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return logits;
}

}  // namespace tandem::parallel
