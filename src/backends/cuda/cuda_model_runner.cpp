#include "backends/cuda/cuda_model_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_buffer.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/tensor_reduce.h"
#include "common/error.h"
#include "parallel/communicator.h"
#include "parallel/rank_model.h"

namespace tandem {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceMatrix;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr int64_t kDefaultStepTokens = 1024;       // CudaRunnerOptions::max_step_tokens when 0
// Scratch beyond the step buffers: cuBLAS's workspace (32 MiB), the 8-bit
// dequantization slice (128 MiB), attention and gemm_q8 workspaces, and room
// for what the CUDA runtime and cuBLAS allocate themselves (their kernels'
// code among it, loaded as first used), graphs, and each allocation's
// rounding to whole pages. With 256 MiB in all, a 0.6B shape's runner after
// a 768-token step held 137 MiB less than planned in f16 but 151 MiB more
// with FP8 tensor cores (H100, CudaPlan.RunnerStaysWithinItsPlan).
constexpr uint64_t kScratchFixed = uint64_t{512} << 20;
constexpr uint64_t kUploadChunk = uint64_t{64} << 20;
constexpr int64_t kMaxGraphTokens = kCudaGraphMaxTokens;
constexpr int64_t kPreallocTokens = 256;   // step scratch allocated up front
// Larger decode batches take the tensor-core GEMM (batch_invariant off):
// the GEMV's time grows with its tokens (cuda_gemv_bench on an H200: 8
// tokens read 19-31% of peak bandwidth, the GEMM at 16 tokens 44-84%).
// 8-bit weights take the int8 tensor-core GEMM (cuda::gemm_q8) instead.
constexpr int64_t kMaxGemvDecode = 4;
// FP8 rows on FP8 tensor cores: the GEMV only for one token. It converts
// every weight to float, so its time doubles at two tokens, while cuBLASLt's
// FP8 product takes the same time from 1 to 6 (H100, 8B shape: decode
// steps of 2, 3 and 4 sequences 7.94, 9.80 and 10.75 ms through the GEMV,
// 3.97, 4.02 and 4.04 through the GEMM; one sequence 3.86 ms either way).
// The int8 and Q8_0 GEMV (dp4a) stays ahead of gemm_q8 up to 4 tokens.
constexpr int64_t kMaxFp8GemvDecode = 1;

bool cuda_supports(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0;
}

// Whether the chunk's token is drawn on the GPU from a planned RowSampling.
bool sampled_on_gpu(const SequenceChunk& ch) { return ch.sampling != nullptr && !ch.argmax_only && !ch.all_logits; }

// Whether every chunk's token is picked on the GPU (its argmax or a planned
// draw): the step then copies back only the token ids, no logits.
bool tokens_only(std::span<const SequenceChunk> chunks) {
  return std::all_of(chunks.begin(), chunks.end(),
                     [](const SequenceChunk& ch) { return ch.argmax_only || sampled_on_gpu(ch); });
}

using cuda::WeightFormat;

// The format a matrix of `dtype` takes on the GPU under `q`.
WeightFormat target_format(DType dtype, GpuQuantization q) {
  if (q == GpuQuantization::Int8) return WeightFormat::I8Row;
  if (q == GpuQuantization::Fp8) return WeightFormat::F8Row;
  return cuda::weight_format_of(dtype);
}

// Bytes of a [rows, cols] matrix in `format`, scales included.
uint64_t format_bytes(WeightFormat format, int64_t rows, int64_t cols) {
  const uint64_t n = static_cast<uint64_t>(rows * cols);
  switch (format) {
    case WeightFormat::Q8_0: return n + n / 32 * 2;
    case WeightFormat::I8Row:
    case WeightFormat::F8Row: return n + static_cast<uint64_t>(rows) * 4;
    default: return n * static_cast<uint64_t>(cuda::weight_format_bytes(format));
  }
}

// Bytes a tensor takes on the GPU: matrices in their target format, 1-D
// tensors (norms, biases) as f32.
uint64_t device_tensor_bytes(const TensorRef& t, GpuQuantization q) {
  if (t.shape.size() == 2 && cuda_supports(t.dtype)) return format_bytes(target_format(t.dtype, q), t.shape[0], t.shape[1]);
  if (t.shape.size() == 1) return static_cast<uint64_t>(t.n_elements()) * 4;
  return t.n_bytes;
}

// Bytes a matrix takes on the GPU (Q8_0: quants plus f16 scales).
uint64_t device_matrix_bytes(const TensorRef& t) {
  const uint64_t n = static_cast<uint64_t>(t.n_elements());
  switch (t.dtype) {
    case DType::F32: return n * 4;
    case DType::F16:
    case DType::BF16: return n * 2;
    case DType::Q8_0: return n + n / 32 * 2;
    default: return t.n_bytes;
  }
}

bool is_matrix_name(const std::string& name) {
  return name.find("norm") == std::string::npos && name.find(".bias") == std::string::npos &&
         name != "rope_freqs.weight";
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / static_cast<double>(kGiB));
  return buf;
}

}  // namespace

uint64_t step_scratch_bytes(const ModelConfig& c, GpuQuantization quantize, int64_t tokens, int64_t logit_rows,
                            int tp_size) {
  const auto u = [](int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(v, 0)); };
  const uint64_t widest = u(std::max({c.hidden_size, c.q_dim(), c.intermediate_size}));
  const uint64_t layer_rows = u(std::max({2 * c.intermediate_size, c.q_dim() + 2 * c.kv_dim(), c.hidden_size}));
  // Per token: the residual and its norm, q·k·v, attention out, gate·up and
  // silu·up in f32; the 8-bit GEMV's quantized input (int8 and a scale per
  // 32); the GEMM's input rounded to 16 bits, and a norm's rows rounded so
  // (xn_low); FP8's quantized input and f32 product.
  // The runner allocates kPreallocTokens tokens and rows at load whatever
  // the step: the plan counts at least those.
  const uint64_t n_tokens = u(std::max(tokens, kPreallocTokens)), n_rows = u(std::max(logit_rows, kPreallocTokens));
  const uint64_t per_token =
      4 * u(2 * c.hidden_size + c.q_dim() + 2 * c.kv_dim() + c.q_dim() + 3 * c.intermediate_size) + widest +
      widest / 8 + 2 * widest + 2 * u(c.hidden_size);
  // Per row of logits: its selected hidden state (its rounding in xn_low is
  // counted per token: the runner sizes that for the larger of the two),
  // the logits (the host's copy is pinned host memory), its token and
  // argmax_rows's workspace (12 bytes); with tensor parallelism this
  // rank's vocabulary slice, every rank's slices gathered, and those laid
  // side by side on the logits rank.
  const uint64_t vocab = u(c.vocab_size);
  const uint64_t vocab_stride = tp_size > 1 ? (vocab + u(tp_size) - 1) / u(tp_size) : vocab;
  const uint64_t logits = tp_size > 1 ? vocab_stride + 2 * vocab : vocab;
  const uint64_t per_row = 4 * (u(c.hidden_size) + logits) + 4 + 12;
  uint64_t bytes = kScratchFixed + per_token * n_tokens + per_row * n_rows;
  if (quantize == GpuQuantization::Fp8) {
    // Gemm::reserve_fp8: x as E4M3 with a scale per token, and the f32
    // product, for the step's tokens or the LM head's rows, the larger.
    const uint64_t fp8_tokens = std::max(n_tokens, (n_rows * vocab_stride + layer_rows - 1) / layer_rows);
    bytes += fp8_tokens * (widest + 4 + 4 * layer_rows);
  }
  return bytes;
}

const char* gpu_kv_cache_name(GpuKvCache kv) { return kv == GpuKvCache::Fp8 ? "fp8" : "f16"; }

namespace {
// The kernels' name for the cache type.
cuda::KvCacheType kernel_cache_type(GpuKvCache kv) {
  return kv == GpuKvCache::Fp8 ? cuda::KvCacheType::Fp8E4M3 : cuda::KvCacheType::F16;
}
}  // namespace

std::string CudaMemoryPlan::describe() const {
  const uint64_t kv = kv_bytes_per_block * static_cast<uint64_t>(kv_blocks);
  return "gpu budget " + gib(budget_bytes) + ": weights " + gib(weight_bytes) + ", scratch " + gib(scratch_bytes) +
         " (steps of " + std::to_string(step_tokens) + " tokens)" +
         ", KV cache " + gib(kv) + " (" + gpu_kv_cache_name(kv_cache) + ", " + std::to_string(kv_blocks) +
         " blocks of " + std::to_string(block_size) +
         " tokens = " + std::to_string(kv_blocks * block_size) + " tokens in flight, context " +
         std::to_string(max_context) + ")";
}

CudaMemoryPlan plan_cuda_memory(const ModelFile& model, const CudaRunnerOptions& options, uint64_t gpu_total_bytes) {
  return plan_cuda_memory(model.config(), model.tensors(), options, gpu_total_bytes);
}

CudaMemoryPlan plan_cuda_memory(const ModelConfig& c, const std::vector<TensorRef>& tensors,
                                const CudaRunnerOptions& options, uint64_t gpu_total_bytes, int tp_size) {
  CudaMemoryPlan plan;
  plan.block_size = options.block_size;
  check(plan.block_size > 0, "KV block size must be positive");
  plan.max_context = options.max_context > 0 ? options.max_context : c.context_length;
  plan.budget_bytes = options.gpu_memory_bytes > 0 ? options.gpu_memory_bytes
                                                    : static_cast<uint64_t>(static_cast<double>(gpu_total_bytes) * 0.9);
  for (const TensorRef& t : tensors) plan.weight_bytes += device_tensor_bytes(t, options.quantize);
  plan.step_tokens = options.max_step_tokens > 0 ? options.max_step_tokens : kDefaultStepTokens;
  plan.logit_rows = options.max_logit_rows > 0 ? options.max_logit_rows : plan.step_tokens;
  plan.scratch_bytes = step_scratch_bytes(c, options.quantize, plan.step_tokens, plan.logit_rows, tp_size);
  plan.kv_cache = options.kv_cache;
  plan.kv_bytes_per_block = static_cast<uint64_t>(c.n_layers) * 2 * static_cast<uint64_t>(plan.block_size * c.kv_dim()) *
                            cuda::kv_cache_element_bytes(kernel_cache_type(options.kv_cache));
  const int64_t min_blocks = (plan.max_context + plan.block_size - 1) / plan.block_size;
  const uint64_t fixed = plan.weight_bytes + plan.scratch_bytes;
  const uint64_t min_kv = plan.kv_bytes_per_block * static_cast<uint64_t>(min_blocks);
  if (fixed + min_kv > plan.budget_bytes) {
    throw Error("model needs " + gib(plan.weight_bytes) + " for weights + " + gib(min_kv) + " KV at context " +
                std::to_string(plan.max_context) + " + " + gib(plan.scratch_bytes) + " scratch (steps of " +
                std::to_string(plan.step_tokens) + " tokens); gpu budget is " + gib(plan.budget_bytes) +
                " (lower --context or --step-tokens, or raise max_memory.gpu)");
  }
  if (options.kv_blocks > 0) {
    plan.kv_blocks = options.kv_blocks;
    check(fixed + plan.kv_bytes_per_block * static_cast<uint64_t>(plan.kv_blocks) <= plan.budget_bytes,
          std::to_string(plan.kv_blocks) + " KV blocks need " +
              gib(plan.kv_bytes_per_block * static_cast<uint64_t>(plan.kv_blocks)) + " beyond the weights' " +
              gib(plan.weight_bytes) + "; gpu budget is " + gib(plan.budget_bytes));
    check(plan.kv_blocks >= min_blocks, std::to_string(plan.kv_blocks) + " KV blocks cannot hold one sequence of " +
                                            std::to_string(plan.max_context) + " tokens");
  } else {
    plan.kv_blocks = static_cast<int64_t>((plan.budget_bytes - fixed) / plan.kv_bytes_per_block);
  }
  return plan;
}

struct CudaModelRunner::Impl {
  struct Layer {
    DeviceMatrix wq, wk, wv, wo, gate, up, down;  // wq/wk/wv and gate/up may be views of:
    DeviceMatrix qkv;      // [q_dim + 2 * kv_dim, hidden], when q, k and v share a dtype
    DeviceMatrix gate_up;  // [2 * intermediate, hidden], when gate and up share a dtype
    bool fused_qkv = false, fused_gate_up = false;
    const float* attn_norm = nullptr;  // [hidden]
    const float* ffn_norm = nullptr;   // [hidden]
    const float* q_bias = nullptr;     // [q_dim] (qwen2)
    const float* k_bias = nullptr;     // [kv_dim]
    const float* v_bias = nullptr;     // [kv_dim]
    const float* q_norm = nullptr;     // [head_dim] (qwen3)
    const float* k_norm = nullptr;     // [head_dim]
  };

  ModelConfig config;  // a rank's local shape (parallel::RankModel) or the whole model's
  CudaRunnerOptions options;
  CudaMemoryPlan plan;
  cudaStream_t stream = nullptr;
  bool owns_stream = true;

  // Place in a parallel plan; a single GPU is tensor rank 0 of 1, stage 0 of 1.
  int tp_rank = 0, tp_size = 1, stage = 0, n_stages = 1;
  parallel::Communicator* tp_comm = nullptr;
  cuda::TensorReduce* reduce = nullptr;  // CudaRankLinks::reduce
  parallel::Communicator* pipe_comm = nullptr;
  std::function<void()> wait_hook;  // CudaRankLinks::wait
  void wait_stream() {
    if (wait_hook) {
      wait_hook();
    } else {
      TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
  }
  HostTiming host_timing;
  // time_gpu_steps: begin, metadata uploaded, end; the step before's end.
  bool time_steps = false, have_previous_end = false;
  cudaEvent_t step_begin = nullptr, step_uploaded = nullptr, step_end = nullptr, previous_end = nullptr;
  // Waits for the step's work and, when timing steps, adds its GPU times.
  void finish_step() {
    const bool timed = time_steps && tp_size == 1 && n_stages == 1;
    if (timed) TANDEM_CUDA_CHECK(cudaEventRecord(step_end, stream));
    wait_stream();
    if (!timed) return;
    float idle = 0, upload = 0, run = 0;
    TANDEM_CUDA_CHECK(cudaEventElapsedTime(&upload, step_begin, step_uploaded));
    TANDEM_CUDA_CHECK(cudaEventElapsedTime(&run, step_uploaded, step_end));
    if (have_previous_end) {
      TANDEM_CUDA_CHECK(cudaEventElapsedTime(&idle, previous_end, step_begin));
      ++host_timing.timed_steps;
      host_timing.gpu_idle_ms += idle;
      host_timing.gpu_upload_ms += upload;
      host_timing.gpu_run_ms += run;
    }
    std::swap(step_end, previous_end);
    have_previous_end = true;
  }
  bool has_embedding = true, has_head = true;
  int64_t vocab_stride = 0;                   // logits row width on the GPU: the most LM head rows of any tensor rank
  std::vector<std::pair<int64_t, int64_t>> vocab_ranges;  // [begin, end) of each tensor rank's LM head rows
  bool holds_logits() const { return has_head && tp_rank == 0; }
  std::unique_ptr<cuda::Gemm> gemm;
  std::vector<DeviceBuffer> weights;  // owns every weight allocation
  DeviceBuffer staging;               // a matrix in its file's format, before int8/fp8 quantization
  std::vector<Layer> layers;
  DeviceMatrix token_embd, output;
  const float* output_norm = nullptr;
  uint64_t weight_bytes_per_step = 0;
  uint64_t uploaded = 0, upload_total = 0;

  DeviceBuffer rope_cos, rope_sin;  // [max_context, head_dim / 2] f32
  DeviceBuffer k_cache, v_cache;    // [n_layers, kv_blocks * block_size, kv_dim] f16 or E4M3 (plan.kv_cache)
  BlockAllocator allocator{1};

  // Step scratch, grown as needed.
  DeviceBuffer x, xn;     // [T, hidden] f32: residual stream, normalized
  // The residual stream of steps of up to shared_tokens tokens in the
  // tensor group's shared memory (Communicator::shared_buffer), where its
  // all-reduces are faster; null where the group has none. Larger steps
  // (and every step without it) use x. See residual().
  float* shared_x = nullptr;
  int64_t shared_tokens = 0;
  DeviceBuffer qkv;       // [T, q_dim + 2 * kv_dim] f32
  DeviceBuffer attn;      // [T, q_dim] f32
  DeviceBuffer gate_up;   // [T, 2 * intermediate] f32
  DeviceBuffer act;       // [T, intermediate] f32: silu(gate) * up
  DeviceBuffer sel;                              // [n_rows, hidden] f32
  DeviceBuffer logits_dev;                       // [n_rows, vocab_stride] f32: this rank's vocabulary rows
  DeviceBuffer gathered;                         // [tp_size, n_rows, vocab_stride] f32 (tensor parallel)
  DeviceBuffer joined;                           // [n_rows, vocab] f32: the gathered slices side by side (tensor parallel)
  DeviceBuffer meta_dev;                         // int32 step metadata (see forward)
  DeviceBuffer attn_partials, attn_counters;     // attention split workspace (kernels.h)
  DeviceBuffer tokens_dev;                       // [n_rows] int32: each logits row's argmax or sample (compute order)
  DeviceBuffer argmax_keys, argmax_counters;     // [n_rows] u64 and int32: argmax_rows's workspace, kept zero
  cuda::PinnedBuffer tokens_host;                // [n_rows] int32, its copy
  std::vector<int32_t> tokens;                   // row_tokens(): chunk order, empty when not computed
  DeviceBuffer sampling_dev;                     // cuda::sample_rows' arguments, then its penalty entries
  cuda::PinnedBuffer sampling_host;              // their staging copy
  DeviceBuffer act_q, act_d;  // [T, widest input] int8 and [T, widest / 32] f32: a GEMV input quantized (8-bit weights)
  DeviceBuffer xn_low;        // [T, hidden] f16 or bf16: a norm's rows rounded for the 16-bit GEMM (norm_for)
  int sm_count = 1;
  std::vector<std::string> gemm_tuning;  // CudaModelRunner::gemm_tuning()
  bool tensor_core_prefill = false;  // prompt tokens take cuda::prefill_attention
  int grouped_decode_stages = 0;     // large decode batches may take cuda::grouped_decode_attention (0: never)
  bool int8_tensor_cores = false;    // 8-bit decode batches may take cuda::gemm_q8
  DeviceBuffer q8_workspace;         // cuda::gemm_q8's split sums, for the largest need of any matrix
  cuda::PinnedBuffer meta_host, logits_host;
  cudaEvent_t meta_copied = nullptr;  // meta_host may be rewritten once this fires
  std::vector<int32_t> meta;
  std::vector<float> logits;  // [n_rows, vocab], rows in chunk order
  // logits.data() while it is registered as pinned memory (its capacity
  // reserved for kCudaGraphMaxTokens rows): steps of up to that many rows,
  // in order, copy the logits straight into it. Null when not registered.
  float* logits_pinned = nullptr;

  // Graph capture state: captured graphs hold buffer addresses, so any
  // buffer that moves bumps `epoch` and the graphs are captured again.
  uint64_t epoch = 0;
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    uint64_t epoch = 0;
  };
  std::map<int64_t, DecodeGraph> graphs;  // by token count
  int64_t graphs_captured = 0;            // captures since load (CudaModelRunner::decode_graphs_captured)

  // Growing frees the old buffer first: the graphs are stale from then on,
  // even if the allocation that follows throws.
  void ensure(DeviceBuffer& buffer, size_t bytes) {
    if (bytes <= buffer.bytes()) return;
    ++epoch;
    buffer.resize(bytes);
  }

  // With tensor parallelism alone (one stage), the shared residual stream
  // for kPreallocTokens tokens, allocated once at load: a collective call,
  // which every rank of the group makes while it loads. With pipeline
  // stages too the residual stays in ordinary memory: TP 2 x PP 2 with two
  // ranks a GPU gave wrong sums with it shared (docs/PARALLEL.md).
  void share_residual() {
    // With the fused reduction the window holds its parts instead.
    if (tp_size <= 1 || n_stages != 1 || !options.shared_all_reduce || reduce != nullptr) return;
    shared_x = tp_comm->shared_buffer(static_cast<size_t>(kPreallocTokens * config.hidden_size) * sizeof(float),
                                      wait_hook);
    shared_tokens = shared_x != nullptr ? kPreallocTokens : 0;
  }
  // The residual stream of a step of T tokens, [T, hidden] f32.
  float* residual(int64_t T) const { return T <= shared_tokens ? shared_x : x.get<float>(); }
  // Whether the residual stream is in the tensor group's shared memory.
  bool residual_shared() const { return shared_x != nullptr; }

  template <typename Enqueue>
  cudaGraphExec_t decode_graph(int64_t n_tokens, Enqueue&& enqueue) {
    DecodeGraph& g = graphs[n_tokens];
    if (g.exec && g.epoch == epoch) return g.exec;
    if (g.exec) cudaGraphExecDestroy(g.exec);
    g.exec = nullptr;
    cudaGraph_t graph = nullptr;
    TANDEM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    TANDEM_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    const cudaError_t status = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    TANDEM_CUDA_CHECK(status);
    g.epoch = epoch;
    ++graphs_captured;
    return g.exec;
  }

  void load(const std::string& path, const std::vector<TensorRef>& tensors);
  // cuda::Gemm::tune for every 16-bit and FP8 matrix shape a step multiplies by.
  void tune_gemms();
  // cuda::Gemm::warm for every matrix shape a step multiplies by (a
  // parallel rank, at load, before its first collective).
  void warm_gemms();
  // Grows the step buffers for T tokens, n_rows logits rows and meta_ints
  // int32 of metadata; with host_logits, also the pinned buffer that the
  // rows' logits are copied to (a step whose tokens are all picked on the
  // GPU copies back only their ids). Frees and allocates (which waits for
  // the GPU): a parallel rank does it before a step's first collective
  // (reserve_shard).
  void reserve(int64_t T, int64_t n_rows, int64_t meta_ints, bool host_logits) {
    reserve_device(T, n_rows, meta_ints);
    reserve_host(n_rows, meta_ints, host_logits);
  }
  // The GPU's part of reserve(): what the kernels (and captured graphs) use.
  // A growth that throws (out of memory) may have freed a buffer that the
  // graphs hold: they are captured again on the next step.
  void reserve_device(int64_t T, int64_t n_rows, int64_t meta_ints) {
    try {
      grow_device(T, n_rows, meta_ints);
    } catch (...) {
      ++epoch;
      throw;
    }
  }
  void grow_device(int64_t T, int64_t n_rows, int64_t meta_ints) {
    const ModelConfig& c = config;
    const size_t f = sizeof(float);
    ensure(x, T * c.hidden_size * f);
    ensure(xn, T * c.hidden_size * f);
    ensure(qkv, T * (c.q_dim() + 2 * c.kv_dim()) * f);
    ensure(attn, T * c.q_dim() * f);
    ensure(gate_up, T * 2 * c.intermediate_size * f);
    ensure(act, T * c.intermediate_size * f);
    ensure(sel, n_rows * c.hidden_size * f);
    ensure(act_q, T * widest_input());
    ensure(act_d, T * widest_input() / 32 * f);
    ensure(xn_low, std::max(T, n_rows) * c.hidden_size * 2);
    if (has_head) {
      ensure(logits_dev, n_rows * vocab_stride * f);
      if (tp_size > 1) ensure(gathered, tp_size * n_rows * vocab_stride * f);
      if (tp_size > 1 && holds_logits()) ensure(joined, n_rows * config.vocab_size * f);
    }
    ensure(meta_dev, static_cast<size_t>(meta_ints) * sizeof(int32_t));
    // The GEMM's rounded input is captured in decode graphs too.
    if (gemm && gemm->reserve_input(T * widest_input())) ++epoch;
    if (gemm && options.quantize == GpuQuantization::Fp8 && gemm->fp8_tensor_cores()) {
      const int64_t layer_rows = std::max({2 * c.intermediate_size, c.q_dim() + 2 * c.kv_dim(), c.hidden_size});
      const int64_t tokens = std::max(T, (n_rows * vocab_stride + layer_rows - 1) / layer_rows);  // or the LM head
      if (gemm->reserve_fp8(tokens, widest_input(), layer_rows)) ++epoch;
    }
    ensure(tokens_dev, static_cast<size_t>(n_rows) * sizeof(int32_t));
    if (argmax_counters.bytes() < static_cast<size_t>(n_rows) * sizeof(int32_t)) {
      argmax_keys.resize(static_cast<size_t>(n_rows) * sizeof(unsigned long long));
      argmax_counters.resize(static_cast<size_t>(n_rows) * sizeof(int32_t));
      TANDEM_CUDA_CHECK(cudaMemsetAsync(argmax_keys.get(), 0, argmax_keys.bytes(), stream));
      TANDEM_CUDA_CHECK(cudaMemsetAsync(argmax_counters.get(), 0, argmax_counters.bytes(), stream));
    }
  }
  // The host's part: the pinned buffers the step's metadata, tokens and
  // logits pass through, and the pinned logits vector.
  void reserve_host(int64_t n_rows, int64_t meta_ints, bool host_logits) {
    const size_t f = sizeof(float);
    if (tokens_host.bytes() < static_cast<size_t>(n_rows) * sizeof(int32_t))
      tokens_host.resize(static_cast<size_t>(n_rows) * sizeof(int32_t));
    if (tp_size == 1 && n_stages == 1) meta_host.resize(static_cast<size_t>(meta_ints) * sizeof(int32_t));
    // At least doubling: a batch that fills up a row or two a step would
    // otherwise pin all its rows anew each step (120 rows of a 128k
    // vocabulary: the GPU idle for up to 45 ms between steps on an H100
    // machine).
    const size_t host_bytes = static_cast<size_t>(tp_size * n_rows * vocab_stride) * f;
    if (holds_logits() && host_logits && host_bytes > logits_host.bytes())
      logits_host.resize(std::max(host_bytes, 2 * logits_host.bytes()));
    // Logits that outgrow the pinned vector move it: unregistered here, where
    // a parallel rank grows (cudaHostUnregister may wait for the GPU), not
    // mid-step.
    if (logits_pinned != nullptr && static_cast<size_t>(n_rows * config.vocab_size) > logits.capacity()) {
      cudaHostUnregister(logits_pinned);
      logits_pinned = nullptr;
    }
  }
  // One step; advances each chunk's kv->n_tokens when `advance`.
  const std::vector<float>& run(std::span<const SequenceChunk> chunks, bool advance);
  // Enqueues cuda::sample_rows for the chunks with a RowSampling (chunk
  // order; `rows[i]` is chunk i's logits row), writing tokens_dev.
  void sample_chunks(std::span<const SequenceChunk> chunks, const std::vector<int64_t>& rows, float* logits_dev,
                     int64_t ld);
  // Grows sample_chunks' staging buffers for these chunks (frees and
  // allocates, which waits for the GPU).
  void reserve_sampling(std::span<const SequenceChunk> chunks);

  void report_progress(uint64_t bytes) {
    uploaded += bytes;
    if (options.on_load_progress) options.on_load_progress(uploaded, upload_total);
  }

  void* upload_bytes(const void* src, uint64_t bytes) {
    DeviceBuffer buf(bytes);
    for (uint64_t off = 0; off < bytes; off += kUploadChunk) {
      const uint64_t n = std::min(kUploadChunk, bytes - off);
      TANDEM_CUDA_CHECK(cudaMemcpy(buf.get<char>() + off, static_cast<const char*>(src) + off, n,
                                   cudaMemcpyHostToDevice));
      report_progress(n);
    }
    weights.push_back(std::move(buf));
    return weights.back().get();
  }

  void check_matrix(const TensorRef& t, const std::string& path) const {
    check(cuda_supports(t.dtype), path + ": tensor '" + t.name + "' has type " + std::string(dtype_name(t.dtype)) +
                                      "; the CUDA engine computes with f32, f16, bf16 and q8_0 weights");
    check(t.shape.size() == 2, path + ": tensor '" + t.name + "' is not a matrix");
    const int64_t multiple = cuda::gemv_vector_elems(target_format(t.dtype, options.quantize));
    check(t.shape[1] % multiple == 0, path + ": tensor '" + t.name + "' has " + std::to_string(t.shape[1]) +
                                          " columns; the CUDA engine needs a multiple of " + std::to_string(multiple));
  }

  // Device storage for a [rows, cols] matrix in `format` (owned by `weights`
  // unless `scratch` is given, which then holds it).
  DeviceMatrix allocate_matrix(WeightFormat format, int64_t rows, int64_t cols, DeviceBuffer* scratch = nullptr) {
    DeviceMatrix m;
    m.format = format;
    m.rows = rows;
    m.cols = cols;
    const uint64_t n = static_cast<uint64_t>(rows * cols);
    const uint64_t data_bytes = n * static_cast<uint64_t>(cuda::weight_format_bytes(format));
    const uint64_t total = format_bytes(format, rows, cols);
    DeviceBuffer* buf = scratch;
    if (!buf) {
      weights.emplace_back();
      buf = &weights.back();
    }
    buf->resize(total);
    m.data = buf->get();
    if (total > data_bytes) m.scales = buf->get<char>() + data_bytes;  // scales after the data (aligned: n % 16 == 0)
    return m;
  }

  // Rows [row0, row0 + rows) of `m` as a matrix of their own.
  static DeviceMatrix row_slice(const DeviceMatrix& m, int64_t row0, int64_t rows) {
    DeviceMatrix s = m;
    s.rows = rows;
    s.data = static_cast<const char*>(m.data) + row0 * m.cols * cuda::weight_format_bytes(m.format);
    if (m.format == WeightFormat::Q8_0) s.scales = static_cast<const __half*>(m.scales) + row0 * (m.cols / 32);
    if (m.format == WeightFormat::I8Row || m.format == WeightFormat::F8Row)
      s.scales = static_cast<const float*>(m.scales) + row0;
    return s;
  }

  // Copies tensor `t` into `dst` (same shape): as it is, splitting Q8_0's
  // GGUF blocks {f16 d, int8 qs[32]} into quants and scales, or through a
  // staging copy quantized on the GPU when dst is int8/fp8.
  void fill_matrix(const TensorRef& t, const DeviceMatrix& dst) {
    const WeightFormat source = cuda::weight_format_of(t.dtype);
    if (dst.format != source) {
      DeviceMatrix staged = allocate_matrix(source, dst.rows, dst.cols, &staging);
      fill_matrix(t, staged);
      cuda::quantize_rows(staged, dst, stream);
      TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    if (t.dtype != DType::Q8_0) {
      const uint64_t bytes = device_matrix_bytes(t);
      for (uint64_t off = 0; off < bytes; off += kUploadChunk) {
        const uint64_t n = std::min(kUploadChunk, bytes - off);
        TANDEM_CUDA_CHECK(cudaMemcpy(static_cast<char*>(const_cast<void*>(dst.data)) + off, t.data + off, n,
                                     cudaMemcpyHostToDevice));
        report_progress(n);
      }
      return;
    }
    const int64_t cols = dst.cols, blocks_per_row = cols / 32;
    const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>(kUploadChunk) / cols);
    std::vector<int8_t> host_q;
    std::vector<uint16_t> host_d;
    const auto* blocks = reinterpret_cast<const BlockQ8_0*>(t.data);
    auto* q = static_cast<int8_t*>(const_cast<void*>(dst.data));
    auto* d = static_cast<uint16_t*>(const_cast<void*>(dst.scales));
    for (int64_t r0 = 0; r0 < dst.rows; r0 += chunk_rows) {
      const int64_t n = std::min(chunk_rows, dst.rows - r0);
      host_q.resize(static_cast<size_t>(n * cols));
      host_d.resize(static_cast<size_t>(n * blocks_per_row));
      for (int64_t b = 0; b < n * blocks_per_row; ++b) {
        const BlockQ8_0& blk = blocks[r0 * blocks_per_row + b];
        host_d[static_cast<size_t>(b)] = blk.d;
        std::memcpy(host_q.data() + b * 32, blk.qs, 32);
      }
      TANDEM_CUDA_CHECK(cudaMemcpy(q + r0 * cols, host_q.data(), host_q.size(), cudaMemcpyHostToDevice));
      TANDEM_CUDA_CHECK(cudaMemcpy(d + r0 * blocks_per_row, host_d.data(), host_d.size() * sizeof(uint16_t),
                                   cudaMemcpyHostToDevice));
      report_progress(static_cast<uint64_t>(n * cols + n * blocks_per_row * 2));
    }
  }

  DeviceMatrix upload_matrix(const TensorRef& t, const std::string& path) {
    check_matrix(t, path);
    DeviceMatrix m = allocate_matrix(target_format(t.dtype, options.quantize), t.shape[0], t.shape[1]);
    fill_matrix(t, m);
    return m;
  }

  // Uploads matrices of one input size stacked by rows into one allocation
  // when they share a dtype (so one launch computes them all); `parts` gets
  // each matrix as a view. Returns whether they were stacked.
  bool upload_stacked(const std::vector<const TensorRef*>& tensors, const std::string& path, DeviceMatrix& stacked,
                      std::vector<DeviceMatrix>& parts) {
    bool same = true;
    int64_t rows = 0;
    for (const TensorRef* t : tensors) {
      check_matrix(*t, path);
      same = same && t->dtype == tensors[0]->dtype && t->shape[1] == tensors[0]->shape[1];
      rows += t->shape[0];
    }
    parts.clear();
    if (!same) {
      for (const TensorRef* t : tensors) parts.push_back(upload_matrix(*t, path));
      return false;
    }
    stacked = allocate_matrix(target_format(tensors[0]->dtype, options.quantize), rows, tensors[0]->shape[1]);
    int64_t row0 = 0;
    for (const TensorRef* t : tensors) {
      parts.push_back(row_slice(stacked, row0, t->shape[0]));
      fill_matrix(*t, parts.back());
      row0 += t->shape[0];
    }
    return true;
  }

  const float* upload_vector(const TensorRef& t, const std::string& path) {
    check(cuda_supports(t.dtype) && t.dtype != DType::Q8_0, path + ": tensor '" + t.name + "' has type " +
                                                                std::string(dtype_name(t.dtype)) +
                                                                ", expected f32, f16 or bf16");
    std::vector<float> host(static_cast<size_t>(t.n_elements()));
    cpu::dequantize_row(t.dtype, t.data, host.data(), t.n_elements());
    return static_cast<const float*>(upload_bytes(host.data(), host.size() * sizeof(float)));
  }

  // out[t, :w.rows] (+)= W x[t] for the step's tokens (generated first).
  // Generated tokens take the batch-invariant GEMV, except that with
  // batch_invariant off a step decoding more than kMaxGemvDecode sequences
  // (FP8 rows: kMaxFp8GemvDecode) takes a tensor-core GEMM, which reads the
  // weights once for all of them
  // (16/32-bit weights, and FP8 on GPUs with FP8 tensor cores: cuBLAS; Q8_0
  // and int8 on sm_80 and later: quantized_product).
  // Prompt tokens take the cuBLAS GEMM.
  //   in: [n_tokens, w.cols]; out: [n_tokens, ldy].
  // The widest matrix input: hidden, q_dim or the FFN width.
  int64_t widest_input() const {
    return std::max({config.hidden_size, config.q_dim(), config.intermediate_size});
  }

  // How many of the step's tokens (the generated ones, first) take the GEMV.
  int64_t gemv_tokens(const DeviceMatrix& w, int64_t n_tokens, int64_t n_generated) const {
    const int64_t n_gemv = std::min(n_tokens, n_generated);
    // Formats a tensor-core GEMM takes as they are (FP8 rows where the GPU has
    // FP8 tensor cores); Q8_0 and int8 would be dequantized every step.
    const bool wide = w.format == WeightFormat::F16 || w.format == WeightFormat::BF16 ||
                      w.format == WeightFormat::F32 || (w.format == WeightFormat::F8Row && gemm->fp8_tensor_cores());
    const int64_t most = w.format == WeightFormat::F8Row ? kMaxFp8GemvDecode : kMaxGemvDecode;
    return !options.batch_invariant && n_gemv > most && wide ? 0 : n_gemv;
  }

  // Whether all of the step's tokens take w's FP8 tensor-core GEMM, so
  // that the kernel before it may quantize its input (gemm->fp8_input).
  bool fp8_gemm_all(const DeviceMatrix& w, int64_t n_tokens, int64_t n_generated) {
    return w.format == WeightFormat::F8Row && gemv_tokens(w, n_tokens, n_generated) == 0 &&
           gemm->fp8_takes(w, n_tokens);
  }

  // Rows of a matmul input that the 8-bit GEMV takes quantized: the rmsnorm
  // before w quantizes them in the same kernel (0: w takes floats).
  int64_t quantized_rows(const DeviceMatrix& w, int64_t n_tokens, int64_t n_generated) const {
    return cuda::gemv_takes_quantized_input(w.format) ? gemv_tokens(w, n_tokens, n_generated) : 0;
  }
  // What a norm prepared for the matmuls that read its output, besides the
  // f32 rows: `quantized` rows in act_q / act_d for the 8-bit GEMV, and with
  // 16-bit weights the GEMM's rows (those after the GEMV's) already rounded
  // to its input type in xn_low (`rounded`, else null).
  struct NormedInput {
    int64_t quantized = 0;
    const void* rounded = nullptr;
    int64_t rounded_from = 0;  // the first row rounded (the GEMV's rows come before)
    DType rounded_type = DType::F16;
    NormedInput(int64_t quantized_rows = 0) : quantized(quantized_rows) {}  // NOLINT: rows quantized elsewhere
  };
  // rmsnorm of x into out, quantizing the rows that w's GEMV takes (act_q,
  // act_d) and rounding those that w's 16-bit GEMM takes (xn_low): a
  // conversion kernel fewer for each.
  NormedInput norm_for(const DeviceMatrix& w, const float* x, const int32_t* rows, const float* weight, float eps,
                       int64_t n_tokens, int64_t n_generated, int64_t n, float* out) {
    NormedInput in(quantized_rows(w, n_tokens, n_generated));
    const int64_t n_gemv = gemv_tokens(w, n_tokens, n_generated);
    const bool round = (w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) && n_tokens > n_gemv;
    if (round) {
      in.rounded = xn_low.get();
      in.rounded_from = n_gemv;
      in.rounded_type = cuda::Gemm::input_type(w.format);
    }
    cuda::rmsnorm(x, rows, weight, eps, n_tokens, n, out, stream, act_q.get<int8_t>(), act_d.get<float>(), in.quantized,
                  round ? xn_low.get() : nullptr, cuda::Gemm::input_type(w.format), n_gemv);
    return in;
  }

  // out[t, :w.rows] (+)= W x[t] for the n quantized rows in act_q / act_d
  // (8-bit weights): the dp4a GEMV, or with batch_invariant off and more
  // than kMaxGemvDecode rows, the int8 tensor-core GEMM, which reads the
  // weights once per 64 rows instead of once per 8.
  void quantized_product(const DeviceMatrix& w, int64_t n, float* out, int64_t ldy, bool accumulate) {
    if (!options.batch_invariant && int8_tensor_cores && n > kMaxGemvDecode && cuda::gemm_q8_takes(w))
      cuda::gemm_q8(w, act_q.get<int8_t>(), act_d.get<float>(), n, out, ldy, accumulate, sm_count,
                    q8_workspace.get<float>(), stream);
    else
      cuda::gemv_q8(w, act_q.get<int8_t>(), act_d.get<float>(), n, out, ldy, accumulate, stream);
  }

  // One token's q·k·v product q = W x with qkv_finish fused in
  // (cuda::gemv_finishes_qkv must hold).
  void finished_qkv_product(const DeviceMatrix& w, const float* x, float* q, const cuda::QkvFinishArgs& qa,
                            const cuda::AttentionShape& shape, const NormedInput& prepared) {
    if (cuda::gemv_takes_quantized_input(w.format)) {
      if (prepared.quantized < 1)
        cuda::quantize_activations(x, 1, w.cols, act_q.get<int8_t>(), act_d.get<float>(), stream);
      cuda::gemv_q8_qkv(w, act_q.get<int8_t>(), act_d.get<float>(), q, qa, shape, stream);
    } else {
      cuda::gemv_qkv(w, x, q, qa, shape, stream);
    }
  }

  // prepared: what norm_for left beside `in` for w.
  void matmul(const DeviceMatrix& w, const float* in, int64_t n_tokens, int64_t n_generated, float* out, int64_t ldy,
              bool accumulate, const NormedInput& prepared = {}) {
    const int64_t n_gemv = gemv_tokens(w, n_tokens, n_generated);
    if (n_gemv > 0 && cuda::gemv_takes_quantized_input(w.format)) {
      if (n_gemv > prepared.quantized)
        cuda::quantize_activations(in, n_gemv, w.cols, act_q.get<int8_t>(), act_d.get<float>(), stream);
      quantized_product(w, n_gemv, out, ldy, accumulate);
    } else if (n_gemv > 0) {
      cuda::gemv(w, in, n_gemv, out, ldy, accumulate, stream);
    }
    const bool sixteen_bit = w.format == WeightFormat::F16 || w.format == WeightFormat::BF16;
    if (n_tokens > n_gemv && prepared.rounded != nullptr && sixteen_bit && prepared.rounded_from == n_gemv &&
        prepared.rounded_type == cuda::Gemm::input_type(w.format))
      gemm->run_converted(w, prepared.rounded, n_tokens - n_gemv, out + n_gemv * ldy, ldy, accumulate);
    else if (n_tokens > n_gemv)
      gemm->run(w, in + n_gemv * w.cols, n_tokens - n_gemv, out + n_gemv * ldy, ldy, accumulate);
  }
};

// Uploads `tensors` (canonical names; the embedding, head and final norm only
// where has_embedding / has_head) and sets up the cache and scratch. config,
// options and the rank fields are set; the stream is created here unless
// adopted.
void CudaModelRunner::Impl::load(const std::string& path, const std::vector<TensorRef>& tensors) {
  Impl& m = *this;
  const CudaRunnerOptions& options = m.options;
  const ModelConfig& c = m.config;
  std::map<std::string, const TensorRef*, std::less<>> by_name;
  for (const TensorRef& t : tensors) by_name[t.name] = &t;

  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
    cudaGetLastError();
    throw Error("no CUDA GPU is visible (use --device cpu to run on the CPU)");
  }
  check(options.device >= 0 && options.device < n_devices,
        "GPU " + std::to_string(options.device) + " does not exist; " + std::to_string(n_devices) + " visible");
  TANDEM_CUDA_CHECK(cudaSetDevice(options.device));
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  m.plan = plan_cuda_memory(c, tensors, options, total_bytes, m.tp_size);
  const uint64_t planned = m.plan.weight_bytes + m.plan.scratch_bytes +
                           m.plan.kv_bytes_per_block * static_cast<uint64_t>(m.plan.kv_blocks);
  check(options.gpu_memory_bytes == 0 || planned <= free_bytes,
        "the plan needs " + gib(planned) + " but GPU " + std::to_string(options.device) + " has " + gib(free_bytes) +
            " free");
  if (options.gpu_memory_bytes == 0 && options.kv_blocks == 0) {
    // Other processes may hold memory: size the cache from what is free.
    const uint64_t usable = static_cast<uint64_t>(static_cast<double>(free_bytes) * 0.95);
    const uint64_t fixed = m.plan.weight_bytes + m.plan.scratch_bytes;
    check(usable > fixed, "model needs " + gib(fixed) + " for weights and scratch; GPU " +
                              std::to_string(options.device) + " has " + gib(free_bytes) + " free");
    m.plan.kv_blocks = std::min<int64_t>(m.plan.kv_blocks,
                                         static_cast<int64_t>((usable - fixed) / m.plan.kv_bytes_per_block));
    check(m.plan.kv_blocks * m.plan.block_size >= m.plan.max_context,
          "KV cache for context " + std::to_string(m.plan.max_context) + " does not fit the " + gib(free_bytes) +
              " free on GPU " + std::to_string(options.device) + " after " + gib(fixed) + " of weights and scratch");
  }
  m.options.max_context = m.plan.max_context;
  m.options.kv_blocks = m.plan.kv_blocks;

  if (m.owns_stream) TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&m.meta_copied, cudaEventDisableTiming));
  m.gemm = std::make_unique<cuda::Gemm>(m.stream);

  // Progress counts the bytes copied from the file: matrices in their file's
  // format (quantization happens on the GPU afterwards), 1-D tensors as f32.
  for (const TensorRef& t : tensors) {
    if (t.name == "rope_freqs.weight") continue;  // folded into the RoPE tables, not uploaded
    m.upload_total += t.shape.size() == 2 ? device_matrix_bytes(t) : static_cast<uint64_t>(t.n_elements()) * 4;
  }
  const auto& tensor = [&](const std::string& name) -> const TensorRef& {
    auto it = by_name.find(name);
    check(it != by_name.end(), path + ": tensor '" + name + "' is missing");
    return *it->second;
  };
  auto bytes_of = [](const DeviceMatrix& w) {
    return format_bytes(w.format, w.rows, w.cols);
  };
  if (m.has_embedding) m.token_embd = m.upload_matrix(tensor("token_embd.weight"), path);
  if (m.has_head) {
    m.output = c.tied_embeddings ? m.token_embd : m.upload_matrix(tensor("output.weight"), path);
    m.output_norm = m.upload_vector(tensor("output_norm.weight"), path);
    m.weight_bytes_per_step = bytes_of(m.output);
    if (m.vocab_stride == 0) {
      m.vocab_stride = m.output.rows;
      m.vocab_ranges = {{0, m.output.rows}};
    }
  }
  m.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    Impl::Layer& L = m.layers[static_cast<size_t>(l)];
    std::vector<DeviceMatrix> parts;
    L.fused_qkv = m.upload_stacked(
        {&tensor(b + "attn_q.weight"), &tensor(b + "attn_k.weight"), &tensor(b + "attn_v.weight")}, path, L.qkv, parts);
    L.wq = parts[0];
    L.wk = parts[1];
    L.wv = parts[2];
    L.wo = m.upload_matrix(tensor(b + "attn_output.weight"), path);
    L.fused_gate_up =
        m.upload_stacked({&tensor(b + "ffn_gate.weight"), &tensor(b + "ffn_up.weight")}, path, L.gate_up, parts);
    L.gate = parts[0];
    L.up = parts[1];
    L.down = m.upload_matrix(tensor(b + "ffn_down.weight"), path);
    L.attn_norm = m.upload_vector(tensor(b + "attn_norm.weight"), path);
    L.ffn_norm = m.upload_vector(tensor(b + "ffn_norm.weight"), path);
    if (c.qkv_bias) {
      L.q_bias = m.upload_vector(tensor(b + "attn_q.bias"), path);
      L.k_bias = m.upload_vector(tensor(b + "attn_k.bias"), path);
      L.v_bias = m.upload_vector(tensor(b + "attn_v.bias"), path);
    }
    if (c.qk_norm) {
      L.q_norm = m.upload_vector(tensor(b + "attn_q_norm.weight"), path);
      L.k_norm = m.upload_vector(tensor(b + "attn_k_norm.weight"), path);
    }
    for (const DeviceMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down})
      m.weight_bytes_per_step += bytes_of(*w);
  }

  m.staging = DeviceBuffer();
  if (m.options.on_load_progress) m.options.on_load_progress(m.upload_total, m.upload_total);
  m.options.on_load_progress = nullptr;  // it may refer to the caller's locals

  // RoPE tables, angles in double as the CPU engine computes them.
  const std::vector<double> inv_freq = rope_inv_freq(c);
  const int64_t half = c.head_dim / 2;
  std::vector<float> cos_table(static_cast<size_t>(m.plan.max_context * half)), sin_table(cos_table.size());
  for (int64_t p = 0; p < m.plan.max_context; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      cos_table[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
      sin_table[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
    }
  }
  m.rope_cos.resize(cos_table.size() * sizeof(float));
  m.rope_sin.resize(sin_table.size() * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemcpy(m.rope_cos.get(), cos_table.data(), cos_table.size() * sizeof(float), cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(cudaMemcpy(m.rope_sin.get(), sin_table.data(), sin_table.size() * sizeof(float), cudaMemcpyHostToDevice));

  // Before the cache takes the memory that tuning borrows for a moment.
  if (options.tune_gemm && !options.batch_invariant) m.tune_gemms();
  if (m.tp_comm != nullptr || m.pipe_comm != nullptr) m.warm_gemms();

  const size_t cache_bytes = m.plan.kv_bytes_per_block * static_cast<uint64_t>(m.plan.kv_blocks) / 2;
  m.k_cache.resize(cache_bytes);
  m.v_cache.resize(cache_bytes);
  m.allocator = BlockAllocator(m.plan.kv_blocks);

  // 8-bit weights may be dequantized inside a captured decode graph (FP8
  // shapes without an FP8 kernel): their slice is allocated now, at its largest.
  {
    auto eight_bit = [](const DeviceMatrix& w) {
      return w.format == WeightFormat::Q8_0 || w.format == WeightFormat::I8Row || w.format == WeightFormat::F8Row;
    };
    bool any = eight_bit(m.output);
    for (const Impl::Layer& L : m.layers)
      for (const DeviceMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down, &L.qkv, &L.gate_up})
        any = any || eight_bit(*w);
    if (any) m.gemm->reserve_dequant();
  }
  // Step scratch for kPreallocTokens tokens up front, so that captured
  // decode graphs stay valid through ordinary prefill chunks.
  const size_t f = sizeof(float), n = static_cast<size_t>(kPreallocTokens);
  m.x.resize(n * c.hidden_size * f);
  m.share_residual();
  m.xn.resize(n * c.hidden_size * f);
  m.qkv.resize(n * (c.q_dim() + 2 * c.kv_dim()) * f);
  m.attn.resize(n * c.q_dim() * f);
  m.gate_up.resize(n * 2 * c.intermediate_size * f);
  m.act.resize(n * c.intermediate_size * f);
  m.sel.resize(n * c.hidden_size * f);
  m.act_q.resize(n * m.widest_input());
  m.act_d.resize(n * m.widest_input() / 32 * f);
  m.xn_low.resize(n * c.hidden_size * 2);
  m.logits_dev.resize(n * std::max<int64_t>(m.vocab_stride, 1) * f);
  m.meta_dev.resize(n * (5 + m.plan.max_context / m.plan.block_size + 1) * sizeof(int32_t));
  m.attn_counters.resize(static_cast<size_t>(cuda::kAttentionSplitSlots) * sizeof(int32_t));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(m.attn_counters.get(), 0, m.attn_counters.bytes(), m.stream));
  m.argmax_keys.resize(n * sizeof(unsigned long long));
  m.argmax_counters.resize(n * sizeof(int32_t));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(m.argmax_keys.get(), 0, m.argmax_keys.bytes(), m.stream));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(m.argmax_counters.get(), 0, m.argmax_counters.bytes(), m.stream));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, m.options.device));
  {
    cuda::AttentionShape shape;
    shape.n_heads = static_cast<int>(c.n_heads);
    shape.n_kv_heads = static_cast<int>(c.n_kv_heads);
    shape.head_dim = static_cast<int>(c.head_dim);
    shape.block_size = static_cast<int>(m.plan.block_size);
    m.tensor_core_prefill = cuda::prefill_attention_init(shape, m.options.device);
    m.grouped_decode_stages = cuda::grouped_decode_attention_init(
        shape, m.options.device,
        kernel_cache_type(m.plan.kv_cache));
    // One workspace for the splits of decode and of prompt attention, which
    // a layer runs one after the other.
    int64_t split_floats = cuda::kAttentionSplitSlots * 258;
    if (m.tensor_core_prefill)
      split_floats = std::max(split_floats, cuda::prefill_attention_workspace_floats(shape));
    m.attn_partials.resize(static_cast<size_t>(split_floats) * f);
  }
  m.int8_tensor_cores = cuda::gemm_q8_init(m.options.device);
  if (m.int8_tensor_cores) {
    int64_t floats = 0;
    auto need = [&](const DeviceMatrix& w) {
      if (w.data != nullptr && cuda::gemm_q8_takes(w))
        floats = std::max(floats, cuda::gemm_q8_workspace_floats(w.rows, w.cols, m.sm_count));
    };
    need(m.output);
    for (const Impl::Layer& L : m.layers)
      for (const DeviceMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down, &L.qkv, &L.gate_up}) need(*w);
    m.q8_workspace.resize(static_cast<size_t>(floats) * f);
  }
  if (m.holds_logits() && m.tp_size == 1 && m.vocab_stride == c.vocab_size) {
    // Best effort: without it, logits go through logits_host.
    m.logits.reserve(static_cast<size_t>(kMaxGraphTokens * c.vocab_size));
    if (cudaHostRegister(m.logits.data(), m.logits.capacity() * f, cudaHostRegisterDefault) == cudaSuccess) {
      m.logits_pinned = m.logits.data();
    } else {
      cudaGetLastError();
    }
  }
}

void CudaModelRunner::Impl::tune_gemms() {
  // Shapes (rows, cols, format) -> the matrices of that shape a step uses,
  // and the most tokens they take at once.
  std::map<std::tuple<int64_t, int64_t, int>, std::pair<std::vector<const DeviceMatrix*>, int64_t>> groups;
  auto add = [&](const DeviceMatrix& w, int64_t tokens) {
    const bool tensor_cores = w.format == WeightFormat::F16 || w.format == WeightFormat::BF16 ||
                              (w.format == WeightFormat::F8Row && gemm->fp8_tensor_cores());
    if (w.data == nullptr || !tensor_cores) return;
    auto& g = groups[{w.rows, w.cols, static_cast<int>(w.format)}];
    g.first.push_back(&w);
    g.second = std::max(g.second, tokens);
  };
  // Layer matrices up to the planned step, the LM head up to the planned
  // rows of logits (Gemm::tune stops at its last bucket).
  const int64_t step = plan.step_tokens, rows = plan.logit_rows;
  for (const Layer& L : layers) {
    if (L.fused_qkv) {
      add(L.qkv, step);
    } else {
      for (const DeviceMatrix* w : {&L.wq, &L.wk, &L.wv}) add(*w, step);
    }
    if (L.fused_gate_up) {
      add(L.gate_up, step);
    } else {
      add(L.gate, step);
      add(L.up, step);
    }
    add(L.wo, step);
    add(L.down, step);
  }
  // Fewer than Gemm::kTunedFrom rows always take cuBLAS's default.
  if (has_head && rows >= cuda::Gemm::kTunedFrom) add(output, rows);
  for (const auto& [key, group] : groups) {
    const auto& [weights, most] = group;
    std::vector<cuda::Gemm::TunedBucket> buckets;
    try {
      buckets = gemm->tune(weights, most);
    } catch (const Error& e) {
      // No room for the timing's buffers, say: cuBLAS's default stays.
      cudaGetLastError();
      gemm_tuning.push_back("GEMM " + std::to_string(std::get<0>(key)) + " x " + std::to_string(std::get<1>(key)) +
                            ": not tuned (" + e.what() + ")");
      continue;
    }
    if (buckets.empty()) continue;
    int won = 0;
    const cuda::Gemm::TunedBucket* best = nullptr;
    for (const auto& b : buckets) {
      if (b.algo < 0) continue;
      ++won;
      if (!best || b.default_us / b.best_us > best->default_us / best->best_us) best = &b;
    }
    char line[200];
    const bool fp8 = std::get<2>(key) == static_cast<int>(WeightFormat::F8Row);
    if (best) {
      std::snprintf(line, sizeof line, "GEMM %lld x %lld%s: %s won %d of %zu token buckets, most at %lld tokens "
                    "(%.1f -> %.1f us)", static_cast<long long>(std::get<0>(key)), static_cast<long long>(std::get<1>(key)),
                    fp8 ? " fp8" : "", fp8 ? "another FP8 algorithm than the heuristic's first" : "cuBLASLt", won,
                    buckets.size(), static_cast<long long>(best->tokens), best->default_us, best->best_us);
    } else {
      std::snprintf(line, sizeof line, "GEMM %lld x %lld%s: %s in all %zu token buckets",
                    static_cast<long long>(std::get<0>(key)), static_cast<long long>(std::get<1>(key)), fp8 ? " fp8" : "",
                    fp8 ? "the heuristic's first FP8 algorithm" : "cuBLAS's default", buckets.size());
    }
    gemm_tuning.emplace_back(line);
  }
}

void CudaModelRunner::Impl::warm_gemms() {
  // One matrix of each shape and format, and the most tokens it takes.
  std::map<std::tuple<int64_t, int64_t, int>, std::pair<const DeviceMatrix*, int64_t>> shapes;
  auto add = [&](const DeviceMatrix& w, int64_t tokens) {
    if (w.data == nullptr) return;
    auto& s = shapes[{w.rows, w.cols, static_cast<int>(w.format)}];
    s.first = &w;
    s.second = std::max(s.second, tokens);
  };
  for (const Layer& L : layers) {
    for (const DeviceMatrix* w : {&L.qkv, &L.wq, &L.wk, &L.wv, &L.wo, &L.gate_up, &L.gate, &L.up, &L.down})
      add(*w, plan.step_tokens);
  }
  if (has_head) add(output, plan.logit_rows);
  for (const auto& [key, shape] : shapes) {
    try {
      gemm->warm(*shape.first, shape.second);
    } catch (const Error& e) {
      // No room for its buffers, say: the load goes on, and the start-up
      // log says which shape's kernels will load at first use.
      cudaGetLastError();
      gemm_tuning.push_back("GEMM " + std::to_string(std::get<0>(key)) + " x " + std::to_string(std::get<1>(key)) +
                            ": kernels not loaded ahead (" + e.what() + ")");
    }
  }
}

const std::vector<std::string>& CudaModelRunner::gemm_tuning() const { return impl_->gemm_tuning; }

CudaModelRunner::CudaModelRunner(const ModelFile& model, const CudaRunnerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->config = model.config();
  impl_->options = options;
  impl_->load(model.path(), model.tensors());
}

CudaModelRunner::CudaModelRunner(const parallel::RankModel& rank, const CudaRunnerOptions& options,
                                 const CudaRankLinks& links)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = rank.config;
  m.options = options;
  m.tp_rank = static_cast<int>(rank.tp_rank);
  m.tp_size = static_cast<int>(rank.tensor_parallel);
  m.stage = static_cast<int>(rank.stage);
  m.n_stages = static_cast<int>(rank.pipeline_stages);
  m.has_embedding = rank.has_embedding;
  m.has_head = rank.has_lm_head;
  m.tp_comm = links.tensor;
  m.pipe_comm = links.pipeline;
  m.wait_hook = links.wait;
  m.reduce = links.reduce;
  check(m.reduce == nullptr || (m.tp_size > 1 && m.n_stages == 1 && m.reduce->width() == rank.config.hidden_size),
        "internal: the fused reduction is for tensor parallelism alone, over the hidden size");
  check(m.tp_size == 1 || (m.tp_comm != nullptr && m.tp_comm->world_size() == m.tp_size),
        "internal: a tensor-parallel rank needs its group's communicator");
  check(m.n_stages == 1 || (m.pipe_comm != nullptr && m.pipe_comm->world_size() == m.n_stages),
        "internal: a pipeline stage needs the communicator across stages");
  check(links.stream != nullptr, "internal: a parallel rank runs on its communicators' stream");
  m.stream = static_cast<cudaStream_t>(links.stream);
  m.owns_stream = false;
  if (rank.has_lm_head) {
    m.vocab_stride = rank.max_vocab_rows;
    for (int64_t r = 0; r < rank.tensor_parallel; ++r) {
      const parallel::Range v = parallel::split_evenly(rank.full_config.vocab_size, rank.tensor_parallel, r);
      m.vocab_ranges.emplace_back(v.begin, v.end);
    }
    check(m.vocab_ranges[static_cast<size_t>(rank.tp_rank)] == std::make_pair(rank.vocab.begin, rank.vocab.end),
          "internal: LM head rows differ from the even vocabulary split");
  }
  m.load(rank.path, rank.tensors);
}

CudaModelRunner::~CudaModelRunner() {
  if (impl_ && impl_->stream) {
    cudaStreamSynchronize(impl_->stream);
    for (auto& [n, g] : impl_->graphs)
      if (g.exec) cudaGraphExecDestroy(g.exec);
    impl_->gemm.reset();
    if (impl_->logits_pinned) cudaHostUnregister(impl_->logits_pinned);
    if (impl_->meta_copied) cudaEventDestroy(impl_->meta_copied);
    for (cudaEvent_t e : {impl_->step_begin, impl_->step_uploaded, impl_->step_end, impl_->previous_end})
      if (e) cudaEventDestroy(e);
    if (impl_->owns_stream) cudaStreamDestroy(impl_->stream);
  }
}

const ModelConfig& CudaModelRunner::config() const { return impl_->config; }
int64_t CudaModelRunner::max_context() const { return impl_->plan.max_context; }
BlockAllocator& CudaModelRunner::block_allocator() { return impl_->allocator; }
int64_t CudaModelRunner::block_size() const { return impl_->plan.block_size; }
uint64_t CudaModelRunner::weight_bytes_per_step() const { return impl_->weight_bytes_per_step; }
const CudaMemoryPlan& CudaModelRunner::plan() const { return impl_->plan; }

const std::vector<float>& CudaModelRunner::forward(std::span<const SequenceChunk> chunks) {
  check(impl_->tp_size == 1 && impl_->n_stages == 1, "internal: a parallel rank runs steps through forward_shard");
  return impl_->run(chunks, true);
}

const std::vector<float>& CudaModelRunner::forward_shard(std::span<const SequenceChunk> chunks) {
  return impl_->run(chunks, false);
}

int64_t CudaModelRunner::capture_decode_graphs(int64_t max_sequences) {
  Impl& m = *impl_;
  if (!m.options.cuda_graphs || m.tp_size != 1 || m.n_stages != 1 || !m.has_embedding || !m.has_head) return 0;
  TANDEM_CUDA_CHECK(cudaSetDevice(m.options.device));
  // The largest step of the plan: its GPU buffers now, so that no step
  // within the plan moves one (which would have the graphs captured again;
  // host buffers grow with the steps that need them). A step has no more
  // logits rows than tokens. Its metadata: ids, positions, slots and table offsets a token, a row index
  // a logits row, the chunks' block tables (distinct blocks of the cache
  // unless sequences share a prefix; a chunk has at least one token and one
  // logits row), and three ints per prompt tile (at most one a prompt
  // token). A step past these sizes still runs, and captures anew.
  const int64_t T = m.plan.step_tokens, rows = std::min(m.plan.logit_rows, T), bs = m.plan.block_size;
  const int64_t blocks_per_sequence = (m.plan.max_context + bs - 1) / bs;
  const int64_t table_ints = std::min(std::min(T, rows) * blocks_per_sequence, m.plan.kv_blocks);
  m.reserve_device(T, rows, 7 * T + rows + table_ints);

  // One pure decode step of each size: a token at position 0 of each of
  // `n` sequences, on blocks borrowed from the allocator (what it writes
  // there is overwritten before any sequence reads it) and given back.
  const int64_t n = std::min({max_sequences, kMaxGraphTokens, rows, T, m.allocator.n_free()});
  if (n <= 0) return 0;
  std::vector<SequenceKv> kvs(static_cast<size_t>(n));
  const std::array<int32_t, 1> token{0};
  std::vector<SequenceChunk> chunks(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    SequenceChunk& ch = chunks[static_cast<size_t>(i)];
    ch.tokens = token;
    ch.kv = &kvs[static_cast<size_t>(i)];
    ch.prompt_len = 0;  // generated: the decode path
    ch.argmax_only = true;
  }
  const auto give_back = [&] {  // last borrowed first: the allocator's free list as it was
    for (auto kv = kvs.rbegin(); kv != kvs.rend(); ++kv) kv->release(m.allocator);
  };
  const int64_t before = m.graphs_captured;
  try {
    for (SequenceKv& kv : kvs)
      check(kv.reserve(1, bs, m.allocator), "internal: no free KV block for a graph capture");
    for (int64_t b = 1; b <= n; ++b) m.run(std::span<const SequenceChunk>(chunks.data(), static_cast<size_t>(b)), false);
  } catch (...) {
    give_back();
    throw;
  }
  give_back();
  reset_host_timing();
  return m.graphs_captured - before;
}

int64_t CudaModelRunner::decode_graphs_captured() const { return impl_->graphs_captured; }

void CudaModelRunner::synchronize() { impl_->wait_stream(); }
const CudaModelRunner::HostTiming& CudaModelRunner::host_timing() const { return impl_->host_timing; }
void CudaModelRunner::reset_host_timing() {
  impl_->host_timing = HostTiming{};
  impl_->have_previous_end = false;
}
void CudaModelRunner::time_gpu_steps(bool on) {
  TANDEM_CUDA_CHECK(cudaSetDevice(impl_->options.device));
  for (cudaEvent_t* e : {&impl_->step_begin, &impl_->step_uploaded, &impl_->step_end, &impl_->previous_end})
    if (*e == nullptr) TANDEM_CUDA_CHECK(cudaEventCreate(e));
  impl_->time_steps = on;
  impl_->have_previous_end = false;
}
bool CudaModelRunner::residual_in_shared_memory() const { return impl_->residual_shared(); }
bool CudaModelRunner::fused_reductions() const { return impl_->reduce != nullptr; }

std::span<const int32_t> CudaModelRunner::row_tokens() const { return impl_->tokens; }
bool CudaModelRunner::samples_rows() const { return true; }

// Bytes of sample_chunks' staging block for these chunks, and where its
// penalty entries start: the arguments, then the entries (16-byte aligned).
static std::pair<size_t, size_t> sampling_bytes(std::span<const SequenceChunk> chunks) {
  size_t n_args = 0, n_entries = 0;
  for (const SequenceChunk& ch : chunks) {
    if (ch.sampling == nullptr || ch.argmax_only || ch.all_logits) continue;
    ++n_args;
    n_entries += ch.sampling->penalties.size();
  }
  check(n_entries <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), "internal: too many penalty entries");
  const size_t args_bytes = (n_args * sizeof(cuda::SampleRowArgs) + 15) / 16 * 16;
  return {args_bytes + n_entries * sizeof(PenaltyEntry), args_bytes};
}

void CudaModelRunner::Impl::reserve_sampling(std::span<const SequenceChunk> chunks) {
  // Penalty lists grow a token a step: grow by doubling. Not through
  // ensure(): sample_rows runs outside the decode graphs, so they stay valid.
  const size_t bytes = sampling_bytes(chunks).first;
  if (bytes > sampling_host.bytes()) sampling_host.resize(std::max(bytes, 2 * sampling_host.bytes()));
  if (bytes > sampling_dev.bytes()) sampling_dev.resize(std::max(bytes, 2 * sampling_dev.bytes()));
}

void CudaModelRunner::Impl::sample_chunks(std::span<const SequenceChunk> chunks, const std::vector<int64_t>& rows,
                                          float* logits_dev, int64_t ld) {
  const int64_t vocab = config.vocab_size;
  const auto [bytes, args_bytes] = sampling_bytes(chunks);
  reserve_sampling(chunks);  // a parallel rank did it in reserve_shard, before the step's collectives
  auto* args = sampling_host.get<cuda::SampleRowArgs>();
  auto* entries = reinterpret_cast<PenaltyEntry*>(sampling_host.get<char>() + args_bytes);
  size_t a = 0, e = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const RowSampling* rs = chunks[i].sampling;
    if (rs == nullptr || chunks[i].argmax_only || chunks[i].all_logits) continue;
    cuda::SampleRowArgs& arg = args[a++];
    arg = cuda::SampleRowArgs{};
    arg.row = rows[i];
    arg.draw = rs->draw;
    arg.scale = rs->scale;
    arg.top_p = rs->top_p;
    arg.min_p = rs->min_p;
    arg.repetition_penalty = rs->repetition_penalty;
    arg.top_k = rs->top_k;
    arg.greedy = rs->greedy ? 1 : 0;
    arg.penalty_begin = static_cast<int32_t>(e);
    for (const PenaltyEntry& p : rs->penalties) {
      if (p.id < 0 || p.id >= vocab) {
        throw Error("sampling: penalty token id " + std::to_string(p.id) + " is outside the vocabulary of " +
                    std::to_string(vocab));
      }
      entries[e++] = p;
    }
    arg.penalty_end = static_cast<int32_t>(e);
  }
  const cudaStream_t s = stream;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(sampling_dev.get(), sampling_host.get(), bytes, cudaMemcpyHostToDevice, s));
  cuda::sample_rows(logits_dev, vocab, ld, sampling_dev.get<cuda::SampleRowArgs>(), static_cast<int>(a),
                    reinterpret_cast<const PenaltyEntry*>(sampling_dev.get<char>() + args_bytes),
                    tokens_dev.get<int32_t>(), s);
}

CudaModelRunner::ShardNeeds CudaModelRunner::shard_needs(std::span<const SequenceChunk> chunks) {
  ShardNeeds n;
  int64_t n_table = 0;
  for (const SequenceChunk& ch : chunks) {
    n.tokens += static_cast<int64_t>(ch.tokens.size());
    n.rows += ch.all_logits ? static_cast<int64_t>(ch.tokens.size()) : 1;
    n_table += static_cast<int64_t>(ch.kv->block_table.size());
  }
  n.meta_ints = 4 * n.tokens + n.rows + n_table + 3 * n.tokens;  // see run: metadata, prefill tiles at most
  n.sampling_bytes = sampling_bytes(chunks).first;
  return n;
}

void CudaModelRunner::reserve_shard(std::span<const SequenceChunk> chunks) {
  const ShardNeeds n = shard_needs(chunks);
  // The staging buffer too, whatever these chunks want: a parallel runner
  // skips this call for later steps within ShardNeeds, which does not say
  // whether a step copies logits back, and nothing may be allocated mid-step.
  impl_->reserve(n.tokens, n.rows, n.meta_ints, true);
  impl_->reserve_sampling(chunks);
}

const std::vector<float>& CudaModelRunner::Impl::run(std::span<const SequenceChunk> chunks, bool advance) {
  Impl& m = *this;
  const ModelConfig& c = m.config;
  const int64_t hidden = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim(), inter = c.intermediate_size;
  const int64_t bs = m.plan.block_size;

  // Host time of this step, by phase (HostTiming); the rest after the
  // kernels are queued is `finish`, summed whichever way run() returns.
  struct StepClock {
    HostTiming& sum;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), queue_begin = start,
                                          queue_end = start;
    bool queued = false;
    ~StepClock() {
      if (!queued) return;  // a step that threw before its kernels went out
      const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
      ++sum.steps;
      sum.prepare_ms += ms(start, queue_begin);
      sum.enqueue_ms += ms(queue_begin, queue_end);
      sum.finish_ms += ms(queue_end, std::chrono::steady_clock::now());
    }
  } clock{m.host_timing};
  check_step(chunks, m.plan.max_context, bs);
  // The calling thread (the engine's, a rank's) may not have this GPU current.
  TANDEM_CUDA_CHECK(cudaSetDevice(m.options.device));
  int64_t T = 0, n_rows = 0, n_table = 0;
  for (const SequenceChunk& ch : chunks) {
    T += static_cast<int64_t>(ch.tokens.size());
    n_rows += ch.all_logits ? static_cast<int64_t>(ch.tokens.size()) : 1;
    n_table += static_cast<int64_t>(ch.kv->block_table.size());
  }

  // Step metadata, one int32 array uploaded at once:
  //   ids [T] | positions [T] | slots [T] | table_offsets [T] | out_rows [n_rows] | block tables [n_table]
  // Tokens are in compute order: generated tokens first (GEMV), then prompt tokens (GEMM).
  m.meta.assign(static_cast<size_t>(4 * T + n_rows + n_table), 0);
  int32_t* ids = m.meta.data();
  int32_t* positions = ids + T;
  int32_t* slots = positions + T;
  int32_t* table_offsets = slots + T;
  int32_t* out_rows = table_offsets + T;
  int32_t* tables = out_rows + n_rows;
  std::vector<int32_t> chunk_table_offset(chunks.size());
  {
    int64_t off = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      chunk_table_offset[i] = static_cast<int32_t>(off);
      std::copy(chunks[i].kv->block_table.begin(), chunks[i].kv->block_table.end(), tables + off);
      off += static_cast<int64_t>(chunks[i].kv->block_table.size());
    }
  }
  std::vector<int64_t> compute_index(static_cast<size_t>(T));  // chunk order -> compute order
  int64_t n_generated = 0;
  {
    int64_t next = 0;
    for (int pass = 0; pass < 2; ++pass) {
      size_t flat = 0;
      for (size_t ci = 0; ci < chunks.size(); ++ci) {
        const SequenceChunk& ch = chunks[ci];
        for (size_t i = 0; i < ch.tokens.size(); ++i, ++flat) {
          const int64_t pos = ch.kv->n_tokens + static_cast<int64_t>(i);
          const bool generated = pos >= ch.prompt_len;
          if (generated != (pass == 0)) continue;
          const int32_t id = ch.tokens[i];
          if (id < 0 || id >= c.vocab_size)  // the message is built only on failure: this runs for every token
            throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                        std::to_string(c.vocab_size));
          compute_index[flat] = next;
          ids[next] = id;
          positions[next] = static_cast<int32_t>(pos);
          slots[next] = ch.kv->block_table[static_cast<size_t>(pos / bs)] * static_cast<int32_t>(bs) +
                        static_cast<int32_t>(pos % bs);
          table_offsets[next] = chunk_table_offset[ci];
          ++next;
        }
      }
      if (pass == 0) n_generated = next;
    }
  }
  // Rows whose logits are wanted: compute index of each, in chunk order.
  std::vector<int64_t> want;
  {
    size_t flat = 0;
    for (const SequenceChunk& ch : chunks) {
      const size_t n = ch.tokens.size();
      for (size_t i = ch.all_logits ? 0 : n - 1; i < n; ++i) want.push_back(compute_index[flat + i]);
      flat += n;
    }
  }
  std::vector<int64_t> compute_rows(want);
  std::sort(compute_rows.begin(), compute_rows.end());
  int64_t n_generated_rows = 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    out_rows[r] = static_cast<int32_t>(compute_rows[static_cast<size_t>(r)]);
    n_generated_rows += compute_rows[static_cast<size_t>(r)] < n_generated;
  }
  // Prompt tokens attend on tensor cores, in tiles appended to the metadata:
  //   ... | prefill tiles [n_tiles, 3]
  const int64_t tiles_offset = static_cast<int64_t>(m.meta.size());
  int64_t n_tiles = 0;
  if (m.tensor_core_prefill && T > n_generated) {
    m.meta.resize(static_cast<size_t>(tiles_offset + 3 * (T - n_generated)));
    const int32_t* meta_positions = m.meta.data() + T;
    n_tiles = cuda::plan_prefill_tiles(meta_positions, meta_positions + 2 * T, n_generated, T - n_generated,
                                       m.meta.data() + tiles_offset);
    m.meta.resize(static_cast<size_t>(tiles_offset + 3 * n_tiles));
  }
  // Few prompt tiles split their key ranges over more blocks; the split
  // count is part of a token's arithmetic, so batch_invariant keeps one.
  int prefill_splits = 1;
  if (n_tiles > 0 && !m.options.batch_invariant) {
    int max_kv_len = 0;
    for (int64_t i = 0; i < n_tiles; ++i)
      max_kv_len = std::max(max_kv_len, m.meta[static_cast<size_t>(tiles_offset + 3 * i + 2)]);
    cuda::AttentionShape shape;
    shape.n_heads = static_cast<int>(c.n_heads);
    shape.head_dim = static_cast<int>(c.head_dim);
    prefill_splits = cuda::prefill_attention_splits(shape, n_tiles, T - n_generated, max_kv_len, m.sm_count);
  }

  // Tokens through paged_attention that are their sequence's only token in
  // the step: the cache below their positions was written by earlier steps,
  // which lets the kernel start reading it early (AttentionArgs::decode_only).
  bool paged_decode_only = true;
  for (const SequenceChunk& ch : chunks) {
    const bool has_generated = ch.kv->n_tokens + static_cast<int64_t>(ch.tokens.size()) > ch.prompt_len;
    if (ch.tokens.size() > 1 && (n_tiles == 0 || has_generated)) paged_decode_only = false;
  }

  // Buffers. A buffer that moves invalidates the captured decode graphs.
  const size_t f = sizeof(float);
  // Every row's token picked on the GPU: only the ids come back (below).
  const bool all_tokens = tokens_only(chunks);
  m.reserve(T, n_rows, static_cast<int64_t>(m.meta.size()), !all_tokens);
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t vstride = m.vocab_stride;
  cudaStream_t s = m.stream;
  if (m.tp_size == 1 && m.n_stages == 1) {
    // The previous step's metadata copy has finished (forward waits for
    // the logits), but wait for it anyway before reusing the pinned buffer.
    TANDEM_CUDA_CHECK(cudaEventSynchronize(m.meta_copied));
    std::memcpy(m.meta_host.get(), m.meta.data(), m.meta.size() * sizeof(int32_t));
    if (m.time_steps) TANDEM_CUDA_CHECK(cudaEventRecord(m.step_begin, s));
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(m.meta_dev.get(), m.meta_host.get(), m.meta.size() * sizeof(int32_t),
                                      cudaMemcpyHostToDevice, s));
    TANDEM_CUDA_CHECK(cudaEventRecord(m.meta_copied, s));
    if (m.time_steps) TANDEM_CUDA_CHECK(cudaEventRecord(m.step_uploaded, s));
  } else {
    // A parallel rank queues micro-batches without waiting for the earlier
    // ones, whose collectives may wait on other GPUs: copy from pageable
    // memory, which CUDA stages at once, rather than wait to reuse a pinned
    // buffer.
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(m.meta_dev.get(), m.meta.data(), m.meta.size() * sizeof(int32_t),
                                      cudaMemcpyHostToDevice, s));
  }
  const int32_t* d_ids = m.meta_dev.get<int32_t>();
  const int32_t* d_positions = d_ids + T;
  const int32_t* d_slots = d_positions + T;
  const int32_t* d_table_offsets = d_slots + T;
  const int32_t* d_out_rows = d_table_offsets + T;
  const int32_t* d_tables = d_out_rows + n_rows;
  const int32_t* d_tiles = d_ids + tiles_offset;

  float* x = m.residual(T);
  float* xn = m.xn.get<float>();
  float* q = m.qkv.get<float>();  // q, k and v: column slices of qkv
  float* k = q + q_dim;
  float* v = k + kv_dim;
  float* attn = m.attn.get<float>();
  float* gate_up = m.gate_up.get<float>();
  float* act = m.act.get<float>();
  const float eps = static_cast<float>(c.rms_norm_eps);

  cuda::AttentionShape shape;
  shape.n_heads = static_cast<int>(c.n_heads);
  shape.n_kv_heads = static_cast<int>(c.n_kv_heads);
  shape.head_dim = static_cast<int>(c.head_dim);
  shape.block_size = static_cast<int>(bs);
  // One layer's keys (and values): kv_blocks * bs rows of kv_dim elements.
  const cuda::KvCacheType cache_type = kernel_cache_type(m.plan.kv_cache);
  const int64_t layer_cache_bytes = m.plan.kv_blocks * bs * kv_dim * cuda::kv_cache_element_bytes(cache_type);
  // A few tokens split their context across blocks to fill the GPU. The
  // split count is part of a token's arithmetic, so batch_invariant keeps one.
  // Generated tokens take paged_attention, prompt tokens the tensor-core
  // prefill kernel where it supports the shape.
  const int64_t n_paged = n_tiles > 0 ? n_generated : T;
  const int attn_heads_per_block = cuda::attention_heads_per_block(shape, n_paged, m.sm_count);
  const int attn_splits =
      m.options.batch_invariant ? 1 : cuda::attention_splits(shape, n_paged, m.sm_count, attn_heads_per_block);

  float* sel = m.sel.get<float>();
  float* logits_dev = m.logits_dev.get<float>();
  // Tensor parallel: attn_output and ffn_down give partial sums of the
  // residual update. With the fused reduction (steps of up to its
  // max_tokens) each rank writes its part into the reduction's slot and the
  // reduction adds every part to x and normalizes, the next norm included.
  // Otherwise rank 0 adds its part to the residual, the others write theirs
  // over their copy, and the all-reduce leaves x + sum of parts on all.
  const bool tensor_parallel = m.tp_size > 1;
  const bool fused = tensor_parallel && m.reduce != nullptr && T <= m.reduce->max_tokens();
  const bool accumulate_residual = m.tp_rank == 0 && !fused;
  float* attn_update = fused ? m.reduce->part(0) : x;  // [T, hidden]: where attn_output writes
  float* ffn_update = fused ? m.reduce->part(1) : x;   // [T, hidden]: where ffn_down writes
  // The fused reduction of `slot` into x and the norm (`norm`, the rows
  // `rows` or all T) into out, quantizing the rows that w's GEMV takes;
  // from_peers: the product before it stored its row as peer rows.
  auto reduce_norm = [&](int slot, const DeviceMatrix& w, const float* norm, const int32_t* rows, int64_t n,
                         int64_t n_gen, float* out, bool from_peers) {
    cuda::ReduceNormArgs ra;
    ra.from_peer_rows = from_peers;
    ra.x = x;
    ra.rows = rows;
    ra.n_rows = n;
    ra.weight = norm;
    ra.eps = eps;
    ra.out = out;
    const int64_t n_quantized = m.quantized_rows(w, n, n_gen);
    if (n_quantized > 0) {
      ra.q = m.act_q.get<int8_t>();
      ra.d = m.act_d.get<float>();
      ra.n_quantized = n_quantized;
    }
    m.reduce->reduce_norm(slot, ra, s);
    return n_quantized;
  };
  // One generated token with the fused reduction: a 16-bit or 8-bit (Q8_0,
  // int8) o or down GEMV stores its row straight into the other ranks'
  // memory (peer rows, tensor_reduce.h), and the reduction after it waits
  // for those words in its own memory instead of meeting the other ranks
  // and reading their parts. Every rank decides alike (the same weights and
  // step).
  auto peer_rows_for = [&](int slot, const DeviceMatrix& w) {
    const bool one_token = fused && T == 1 && n_generated == 1 && m.gemv_tokens(w, T, n_generated) == 1;
    const bool takes = cuda::gemv_to_peers_takes(w) || cuda::gemv_q8_to_peers_takes(w);
    return one_token && takes ? m.reduce->peer_rows(slot) : cuda::PeerRows{};
  };
  // w x into `out` and the peers' rows (one token): 8-bit weights on x's
  // quantized row in act_q / act_d, which `quantized` says is there (else
  // it is quantized here; silu_mul: x is gate_up).
  auto product_to_peers = [&](const DeviceMatrix& w, const float* in, bool silu_mul, bool quantized, float* out,
                              const cuda::PeerRows& peers) {
    if (!cuda::gemv_takes_quantized_input(w.format)) return cuda::gemv_to_peers(w, in, silu_mul, out, peers, s);
    if (silu_mul) cuda::quantize_silu_mul(in, 1, w.cols, m.act_q.get<int8_t>(), m.act_d.get<float>(), s);
    else if (!quantized) cuda::quantize_activations(in, 1, w.cols, m.act_q.get<int8_t>(), m.act_d.get<float>(), s);
    cuda::gemv_q8_to_peers(w, m.act_q.get<int8_t>(), m.act_d.get<float>(), out, peers, s);
  };
  auto enqueue_step = [&] {
    if (m.has_embedding) {
      cuda::embed_rows(m.token_embd, d_ids, T, x, s);
    } else {
      m.pipe_comm->recv(x, T * hidden, m.stage - 1);
    }
    Impl::NormedInput qkv_in;   // xn's rows prepared for q·k·v (fused: by the last layer's reduction)
    Impl::NormedInput head_in;  // the same for the LM head
    // The layer before's down product, before its scales, waiting in
    // gate_up for this layer's norm to add it to the residual (FP8, one
    // GPU); its row scales here.
    const float* pending_down_scales = nullptr;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const Impl::Layer& L = m.layers[static_cast<size_t>(l)];
      // 8-bit weights: the norm also quantizes the GEMV's input, or for
      // FP8 tensor cores the GEMM's (every token then takes the GEMM).
      const bool fp8_qkv = !fused && L.fused_qkv && m.fp8_gemm_all(L.qkv, T, n_generated);
      if (fp8_qkv) {
        const cuda::Gemm::Fp8Input in = m.gemm->fp8_input(T, m.widest_input());
        if (pending_down_scales != nullptr)  // the down product's token scales are in.scale's, overwritten here
          cuda::add_rmsnorm_fp8(x, gate_up, pending_down_scales, in.scale, L.attn_norm, eps, T, hidden, xn, in.q,
                                in.scale, s, false);
        else
          cuda::rmsnorm_fp8(x, nullptr, L.attn_norm, eps, T, hidden, xn, in.q, in.scale, s, false);
        pending_down_scales = nullptr;
      } else if (!fused || l == 0) {
        qkv_in = m.norm_for(L.fused_qkv ? L.qkv : L.wq, x, nullptr, L.attn_norm, eps, T, n_generated, hidden, xn);
      }
      cuda::QkvFinishArgs qa;
      qa.q = q;
      qa.k = k;
      qa.v = v;
      qa.stride = qkv_dim;
      qa.q_bias = L.q_bias;
      qa.k_bias = L.k_bias;
      qa.v_bias = L.v_bias;
      qa.q_norm = L.q_norm;
      qa.k_norm = L.k_norm;
      qa.norm_eps = eps;
      qa.rope_cos = m.rope_cos.get<float>();
      qa.rope_sin = m.rope_sin.get<float>();
      qa.rope_layout = c.rope.style == RopeStyle::HalfSplit ? cuda::RopeLayout::HalfSplit : cuda::RopeLayout::Interleaved;
      qa.positions = d_positions;
      qa.slots = d_slots;
      qa.k_cache = m.k_cache.get<char>() + l * layer_cache_bytes;
      qa.v_cache = m.v_cache.get<char>() + l * layer_cache_bytes;
      qa.cache_type = cache_type;
      if (fp8_qkv) {
        qa.row_scale = static_cast<const float*>(L.qkv.scales);
        qa.token_scale = m.gemm->fp8_input(T, m.widest_input()).scale;
      }
      // One generated token: the q·k·v GEMV finishes q, k and v itself.
      const bool gemv_finishes = !fp8_qkv && L.fused_qkv && T == 1 && m.gemv_tokens(L.qkv, T, n_generated) == 1 &&
                                 cuda::gemv_finishes_qkv(L.qkv, q, qa, shape);
      if (gemv_finishes) {
        m.finished_qkv_product(L.qkv, xn, q, qa, shape, qkv_in);
      } else {
        if (fp8_qkv) {
          m.gemm->fp8_product(L.qkv, T, q);  // qkv_finish applies the scales
        } else if (L.fused_qkv) {
          m.matmul(L.qkv, xn, T, n_generated, q, qkv_dim, false, qkv_in);
        } else {
          m.matmul(L.wq, xn, T, n_generated, q, qkv_dim, false, qkv_in);
          m.matmul(L.wk, xn, T, n_generated, k, qkv_dim, false, qkv_in);
          m.matmul(L.wv, xn, T, n_generated, v, qkv_dim, false, qkv_in);
        }
        cuda::qkv_finish(qa, shape, T, s);
      }
      cuda::AttentionArgs aa;
      aa.q = q;
      aa.q_stride = qkv_dim;
      aa.k_cache = qa.k_cache;
      aa.v_cache = qa.v_cache;
      aa.cache_type = cache_type;
      aa.positions = d_positions;
      aa.table_offsets = d_table_offsets;
      aa.block_tables = d_tables;
      aa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      aa.out = attn;
      aa.split_partials = m.attn_partials.get<float>();
      aa.split_counters = m.attn_counters.get<int32_t>();
      aa.decode_only = paged_decode_only;
      // 8-bit o projection: attention quantizes the GEMV's rows (the paged
      // tokens come first) as it writes them.
      const int64_t wo_quantized = m.quantized_rows(L.wo, T, n_generated);
      const bool attention_quantizes = wo_quantized > 0 && wo_quantized <= n_paged && c.head_dim % 32 == 0;
      if (attention_quantizes) {
        aa.out_q = m.act_q.get<int8_t>();
        aa.out_d = m.act_d.get<float>();
      }
      // Batches whose (token, KV head) blocks fill the GPU take the
      // tensor-core kernel (its rounding differs from paged_attention's, and
      // the choice depends on the batch: not under batch_invariant). Both
      // quantize the 8-bit o projection's rows alike.
      const bool grouped = m.grouped_decode_stages > 0 && !m.options.batch_invariant &&
                           cuda::grouped_decode_attention_takes(shape, n_paged, m.sm_count);
      if (n_paged > 0 && grouped) {
        cuda::grouped_decode_attention(
            aa, shape, n_paged, cuda::grouped_decode_attention_stages(shape, n_paged, m.sm_count, m.grouped_decode_stages),
            s);
      } else if (n_paged > 0) {
        cuda::paged_attention(aa, shape, n_paged, attn_splits, s, attn_heads_per_block);
      }
      if (n_tiles > 0) cuda::prefill_attention(aa, shape, d_tiles, n_tiles, s, prefill_splits, T - n_generated);
      const DeviceMatrix& ffn_first = L.fused_gate_up ? L.gate_up : L.gate;
      // FP8 on tensor cores with every token on the GEMM: the norm quantizes
      // gate·up's input, the gate·up product stays unscaled, and one kernel
      // applies its scales, silu·mul and the quantization of the down
      // projection's input (the bits of run() for each matrix, with four
      // kernels and a buffer's round trips fewer; from kBf16ProductFrom
      // tokens, run()'s bits on the gate·up product rounded to BF16).
      const bool fp8_ffn = L.fused_gate_up && cuda::silu_mul_fp8_supports(inter) &&
                           m.fp8_gemm_all(L.gate_up, T, n_generated) && m.fp8_gemm_all(L.down, T, n_generated);
      const cuda::Gemm::Fp8Input ffn8 = fp8_ffn ? m.gemm->fp8_input(T, m.widest_input()) : cuda::Gemm::Fp8Input{};
      // One GPU, o on the FP8 GEMM too: o's product waits in the gate·up
      // buffer (free until gate·up's product) and the FFN's norm adds it to
      // the residual with its scales (scale_product's bits).
      const bool fp8_o = fp8_ffn && !tensor_parallel && attn_update == x && accumulate_residual &&
                         hidden <= 2 * inter && m.fp8_gemm_all(L.wo, T, n_generated);
      float* o_product = gate_up;
      const cuda::PeerRows o_peers = fp8_o ? cuda::PeerRows{} : peer_rows_for(0, L.wo);
      if (fp8_o) {
        cuda::quantize_tokens_fp8(attn, T, q_dim, ffn8.q, ffn8.scale, s);
        m.gemm->fp8_product(L.wo, T, o_product);
      } else if (o_peers.n_peers > 0) {
        product_to_peers(L.wo, attn, false, attention_quantizes, attn_update, o_peers);
      } else {
        m.matmul(L.wo, attn, T, n_generated, attn_update, hidden, accumulate_residual,
                 attention_quantizes ? wo_quantized : 0);
      }
      Impl::NormedInput ffn_in;
      if (fused) {
        ffn_in = reduce_norm(0, ffn_first, L.ffn_norm, nullptr, T, n_generated, xn, o_peers.n_peers > 0);
        if (fp8_ffn) cuda::quantize_tokens_fp8(xn, T, hidden, ffn8.q, ffn8.scale, s);
      } else {
        if (tensor_parallel) m.tp_comm->all_reduce_sum(x, T * hidden);
        if (fp8_o)
          cuda::add_rmsnorm_fp8(x, o_product, static_cast<const float*>(L.wo.scales), ffn8.scale, L.ffn_norm, eps, T,
                                hidden, xn, ffn8.q, ffn8.scale, s, false);
        else if (fp8_ffn)
          cuda::rmsnorm_fp8(x, nullptr, L.ffn_norm, eps, T, hidden, xn, ffn8.q, ffn8.scale, s, false);
        else
          ffn_in = m.norm_for(ffn_first, x, nullptr, L.ffn_norm, eps, T, n_generated, hidden, xn);
      }
      if (fp8_ffn) {
        const cuda::Gemm::Fp8Input& in = ffn8;
        const float* gate_up_scales = static_cast<const float*>(L.gate_up.scales);
        // Steps of kBf16ProductFrom tokens or more (prompt chunks, or decode
        // batches that large) take gate·up's product in BF16: half the bytes
        // written and read back, 8 significant bits on the way to E4M3's 4.
        // Smaller steps keep f32 and the tuned algorithms.
        if (T >= cuda::Gemm::kBf16ProductFrom && !m.options.batch_invariant &&
            m.gemm->fp8_takes_bf16(L.gate_up, T)) {
          auto* product = reinterpret_cast<__nv_bfloat16*>(gate_up);
          m.gemm->fp8_product(L.gate_up, T, product);
          cuda::silu_mul_fp8(product, gate_up_scales, in.scale, T, inter, in.q, in.scale, s);
        } else {
          m.gemm->fp8_product(L.gate_up, T, gate_up);
          cuda::silu_mul_fp8(gate_up, gate_up_scales, in.scale, T, inter, in.q, in.scale, s);
        }
        // One GPU, and the next layer's q·k·v on the FP8 GEMM too: its norm
        // adds down's product to the residual with the scales
        // (scale_product's bits), one kernel fewer.
        const Impl::Layer* next = l + 1 < c.n_layers ? &m.layers[static_cast<size_t>(l + 1)] : nullptr;
        if (next != nullptr && !tensor_parallel && ffn_update == x && accumulate_residual && next->fused_qkv &&
            hidden <= 2 * inter && m.fp8_gemm_all(next->qkv, T, n_generated)) {
          m.gemm->fp8_product(L.down, T, gate_up);
          pending_down_scales = static_cast<const float*>(L.down.scales);
        } else {
          m.gemm->run_fp8_input(L.down, T, ffn_update, hidden, accumulate_residual);
        }
      } else if (L.fused_gate_up) {
        m.matmul(L.gate_up, xn, T, n_generated, gate_up, 2 * inter, false, ffn_in);
      } else {
        m.matmul(L.gate, xn, T, n_generated, gate_up, 2 * inter, false, ffn_in);
        m.matmul(L.up, xn, T, n_generated, gate_up + inter, 2 * inter, false, ffn_in);
      }
      // The reduction after down takes peer rows only where it has one row
      // (the LM head's reduction may list none or several).
      const cuda::PeerRows down_peers =
          !fp8_ffn && (l + 1 < c.n_layers || n_rows == 1) ? peer_rows_for(1, L.down) : cuda::PeerRows{};
      if (!fp8_ffn) {
        // silu(gate) * up is computed by the kernel that reads it: the 8-bit
        // GEMV's input quantization, the GEMV itself, or the rounding to the
        // GEMM's input type.
        const int64_t n_gemv = m.gemv_tokens(L.down, T, n_generated);
        if (down_peers.n_peers > 0) {
          product_to_peers(L.down, gate_up, true, false, ffn_update, down_peers);
        } else if (n_gemv > 0 && cuda::gemv_takes_quantized_input(L.down.format)) {
          cuda::quantize_silu_mul(gate_up, n_gemv, inter, m.act_q.get<int8_t>(), m.act_d.get<float>(), s);
          m.quantized_product(L.down, n_gemv, ffn_update, hidden, accumulate_residual);
        } else if (n_gemv > 0) {
          cuda::gemv_silu_mul(L.down, gate_up, n_gemv, ffn_update, hidden, accumulate_residual, s);
        }
        if (T > n_gemv) {
          const float* gate_up_rest = gate_up + n_gemv * 2 * inter;
          float* x_rest = ffn_update + n_gemv * hidden;
          if (L.down.format == WeightFormat::F32 ||
              (L.down.format == WeightFormat::F8Row && m.gemm->fp8_tensor_cores())) {  // f32 input
            cuda::silu_mul(gate_up_rest, T - n_gemv, inter, act, s);
            m.gemm->run(L.down, act, T - n_gemv, x_rest, hidden, accumulate_residual);
          } else {
            cuda::silu_mul_convert(gate_up_rest, T - n_gemv, inter, cuda::Gemm::input_type(L.down.format), act, s);
            m.gemm->run_converted(L.down, act, T - n_gemv, x_rest, hidden, accumulate_residual);
          }
        }
      }
      if (fused && l + 1 < c.n_layers) {
        const Impl::Layer& next = m.layers[static_cast<size_t>(l + 1)];
        qkv_in = reduce_norm(1, next.fused_qkv ? next.qkv : next.wq, next.attn_norm, nullptr, T, n_generated, xn,
                             down_peers.n_peers > 0);
      } else if (fused) {  // one stage: this rank holds the head
        head_in = reduce_norm(1, m.output, m.output_norm, d_out_rows, n_rows, n_generated_rows, sel,
                              down_peers.n_peers > 0);
      } else if (tensor_parallel) {
        m.tp_comm->all_reduce_sum(x, T * hidden);
      }
    }
    if (!m.has_head) {
      m.pipe_comm->send(x, T * hidden, m.stage + 1);
      return;
    }
    if (!fused)
      head_in = m.norm_for(m.output, x, d_out_rows, m.output_norm, eps, n_rows, n_generated_rows, hidden, sel);
    m.matmul(m.output, sel, n_rows, n_generated_rows, logits_dev, vstride, false, head_in);
    if (tensor_parallel) m.tp_comm->all_gather(logits_dev, n_rows * vstride, m.gathered.get<float>());
  };
  // A pure decode step (one token a sequence) of up to kMaxGraphTokens
  // sequences replays a CUDA graph captured for its size: the same kernels,
  // one launch.
  const bool graph_step =
      m.options.cuda_graphs && n_generated == T && n_rows == T && T <= kMaxGraphTokens && paged_decode_only;
  clock.queue_begin = std::chrono::steady_clock::now();
  if (graph_step) {
    cudaGraphExec_t exec = m.decode_graph(T, enqueue_step);
    TANDEM_CUDA_CHECK(cudaGraphLaunch(exec, s));
    ++m.host_timing.graph_steps;
  } else {
    enqueue_step();
  }
  clock.queue_end = std::chrono::steady_clock::now();
  clock.queued = true;
  m.tokens.clear();
  if (!m.holds_logits()) {
    m.logits.clear();
    return m.logits;
  }
  const int64_t vocab = c.vocab_size;
  // Greedy rows take their argmax on the GPU and sampled rows their draw
  // (sample_chunks); a step of nothing else copies back only the ids.
  bool any_argmax = false, any_sampled = false;
  for (const SequenceChunk& ch : chunks) {
    any_argmax = any_argmax || ch.argmax_only;
    any_sampled = any_sampled || sampled_on_gpu(ch);
  }
  const bool want_tokens = any_argmax || any_sampled;
  // The rows the tokens are picked from: [n_rows, rows_ld], vocabulary in
  // order. Tensor ranks' slices are laid side by side first.
  float* rows_dev = logits_dev;
  int64_t rows_ld = vstride;
  // One row whose slices each start at their rank's stride (every rank but
  // the last has vstride rows): the gathered row is already in order.
  bool gathered_in_order = n_rows == 1;
  for (int k = 0; k < m.tp_size; ++k)
    gathered_in_order = gathered_in_order && m.vocab_ranges[static_cast<size_t>(k)].first == k * vstride;
  if (want_tokens && tensor_parallel && gathered_in_order) {
    rows_dev = m.gathered.get<float>();
    rows_ld = vocab;
  } else if (want_tokens && tensor_parallel) {
    rows_dev = m.joined.get<float>();
    rows_ld = vocab;
    for (int k = 0; k < m.tp_size; ++k) {
      const auto [begin, end] = m.vocab_ranges[static_cast<size_t>(k)];
      TANDEM_CUDA_CHECK(cudaMemcpy2DAsync(rows_dev + begin, static_cast<size_t>(vocab) * f,
                                          m.gathered.get<float>() + k * n_rows * vstride, static_cast<size_t>(vstride) * f,
                                          static_cast<size_t>(end - begin) * f, static_cast<size_t>(n_rows),
                                          cudaMemcpyDeviceToDevice, s));
    }
  }
  // Logits row of each returned row, chunk order.
  std::vector<int64_t> logits_row(want.size());
  for (size_t r = 0; r < want.size(); ++r)
    logits_row[r] = std::lower_bound(compute_rows.begin(), compute_rows.end(), want[r]) - compute_rows.begin();
  if (any_argmax)
    cuda::argmax_rows(rows_dev, n_rows, vocab, rows_ld, m.tokens_dev.get<int32_t>(),
                      {m.argmax_keys.get<unsigned long long>(), m.argmax_counters.get<int32_t>()}, s);
  if (any_sampled) {
    // Sampled chunks have one row each, so chunk i's row is found by
    // counting rows.
    std::vector<int64_t> chunk_rows(chunks.size());
    for (size_t i = 0, r = 0; i < chunks.size(); ++i) {
      chunk_rows[i] = logits_row[r];
      r += chunks[i].all_logits ? chunks[i].tokens.size() : 1;
    }
    m.sample_chunks(chunks, chunk_rows, rows_dev, rows_ld);
  }
  if (want_tokens) {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(m.tokens_host.get(), m.tokens_dev.get(), static_cast<size_t>(n_rows) * 4,
                                      cudaMemcpyDeviceToHost, s));
  }
  // Row r (chunk order) of the tokens, once the stream is done.
  auto collect_tokens = [&] {
    if (!want_tokens) return;
    const int32_t* host = m.tokens_host.get<int32_t>();
    m.tokens.resize(static_cast<size_t>(n_rows));
    for (int64_t r = 0; r < n_rows; ++r) m.tokens[static_cast<size_t>(r)] = host[logits_row[static_cast<size_t>(r)]];
  };
  if (want_tokens && all_tokens) {
    m.finish_step();
    if (advance)
      for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
    collect_tokens();
    // [n_rows, vocab] as forward promises, its rows unspecified; within the
    // reserved (pinned) capacity it does not move (reserve() unregistered a
    // pinned vector this step outgrows).
    check(m.logits_pinned == nullptr || static_cast<size_t>(n_rows * vocab) <= m.logits.capacity(),
          "internal: pinned logits outgrown mid-step");
    m.logits.resize(static_cast<size_t>(n_rows * vocab));
    return m.logits;
  }
  if (m.logits_pinned != nullptr && m.logits_pinned == m.logits.data() && vstride == vocab &&
      n_rows <= kMaxGraphTokens && want == compute_rows) {
    // The rows are already in chunk order: one copy, straight into the
    // returned (pinned) vector, which its reserved capacity keeps in place.
    m.logits.resize(static_cast<size_t>(n_rows * vocab));
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(m.logits.data(), logits_dev, static_cast<size_t>(n_rows * vocab) * f,
                                      cudaMemcpyDeviceToHost, s));
    m.finish_step();
    if (advance)
      for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
    collect_tokens();
    return m.logits;
  }
  // Logits of tensor rank k: [n_rows, vstride] block k of the gathered
  // buffer, its first (end - begin) columns being vocabulary [begin, end).
  const float* src_dev = tensor_parallel ? m.gathered.get<float>() : logits_dev;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(m.logits_host.get(), src_dev, m.tp_size * n_rows * vstride * f,
                                    cudaMemcpyDeviceToHost, s));
  m.finish_step();

  if (advance)
    for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
  collect_tokens();
  check(m.logits_pinned == nullptr || static_cast<size_t>(n_rows * vocab) <= m.logits.capacity(),
        "internal: pinned logits outgrown mid-step");  // reserve() unregisters them first
  m.logits.resize(static_cast<size_t>(n_rows * vocab));
  const float* host = m.logits_host.get<float>();
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t src = std::lower_bound(compute_rows.begin(), compute_rows.end(), want[static_cast<size_t>(r)]) -
                        compute_rows.begin();
    for (int k = 0; k < m.tp_size; ++k) {
      const auto [begin, end] = m.vocab_ranges[static_cast<size_t>(k)];
      std::memcpy(m.logits.data() + r * vocab + begin, host + (k * n_rows + src) * vstride,
                  static_cast<size_t>(end - begin) * f);
    }
  }
  return m.logits;
}

std::vector<std::string> describe_cuda_devices() {
  std::vector<std::string> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, " (sm_%d%d, %.1f GiB)", prop.major, prop.minor,
                  static_cast<double>(prop.totalGlobalMem) / static_cast<double>(kGiB));
    out.push_back(std::string(prop.name) + buf);
  }
  return out;
}

bool cuda_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace tandem
