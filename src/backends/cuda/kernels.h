// CUDA kernels of the transformer step, behind host-side launchers. Every
// launcher enqueues on `stream` and returns at once. Activations are f32;
// weights keep their file's type (Q8_0 repacked, see DeviceMatrix); the KV
// cache is f16. Each kernel's CPU twin is named beside it; tests compare the
// two (tests/backends/cuda).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/tensor_reduce.h"
#include "common/dtype.h"
#include "engine/sampling_math.h"

namespace tandem::cuda {

// How a weight matrix sits in GPU memory.
enum class WeightFormat {
  F32,
  F16,
  BF16,
  Q8_0,   // GGUF Q8_0: int8, one f16 scale per 32 weights of a row
  I8Row,  // int8, one f32 scale per row (--quantize int8: W8A16)
  F8Row,  // FP8 E4M3, one f32 scale per row (--quantize fp8)
};
// F32, F16, BF16, Q8_0 for those file types; throws for others.
WeightFormat weight_format_of(DType dtype);
const char* weight_format_name(WeightFormat format);
// Bytes per weight, scales aside.
int64_t weight_format_bytes(WeightFormat format);

// A weight matrix in device memory, used as y = W x (rows = n_out, cols = n_in).
//   F32, F16, BF16: data [rows, cols], row-major.
//   Q8_0: data = int8 quants [rows, cols], scales = f16 [rows, cols / 32]:
//         GGUF's 34-byte blocks split so that quants load 16 bytes at a time.
//   I8Row, F8Row: data = 8-bit [rows, cols], scales = f32 [rows].
struct DeviceMatrix {
  WeightFormat format = WeightFormat::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  const void* scales = nullptr;
};

// Elements per 16-byte load of a weight row; cols must be a multiple.
int64_t gemv_vector_elems(WeightFormat format);

// y[t, r] = (accumulate ? y[t, r] : 0) + sum_c W[r, c] * x[t, c], t < n_tokens.
//   x: [n_tokens, w.cols] f32; y: [n_tokens, ldy] f32 (ldy >= w.rows: y may be
//   a column slice of a wider buffer).
// Reads W once per group of up to 8 tokens. A token's sum runs in the same
// order whatever n_tokens is, so results are batch-invariant.
// CPU twin: cpu::matmul_ref.
void gemv(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
          cudaStream_t stream);

// gemv of silu(gate) * up, computed as x is read (the same bits as silu_mul
// followed by gemv).  gate_up: [n_tokens, 2 * w.cols], gate then up.
// CPU twin: cpu::silu_mul then cpu::matmul_ref.
void gemv_silu_mul(const DeviceMatrix& w, const float* gate_up, int64_t n_tokens, float* y, int64_t ldy,
                   bool accumulate, cudaStream_t stream);

// One token of 16-bit weights (f16, bf16), the product that ends a
// tensor-parallel block: y = W x as gemv (or as gemv_silu_mul, x being
// gate_up, with silu_mul), each value also stored into the other ranks'
// memory for the reduction that follows (PeerRows, tensor_reduce.h). y's
// values have gemv's bits. CPU twin: cpu::matmul_ref.
bool gemv_to_peers_takes(const DeviceMatrix& w);
void gemv_to_peers(const DeviceMatrix& w, const float* x, bool silu_mul, float* y, const PeerRows& peers,
                   cudaStream_t stream);

// The 8-bit GEMV on quantized activations (Q8_0 and I8Row weights): x
// quantized per 32 values of a row, d = max|x| / 127 and q = round(x / d)
// (halves away from zero), then integer dot products per 16 weights.
//   q: [n_tokens, cols] int8; d: [n_tokens, cols / 32] f32 (cols a multiple of 32).
// CPU twin: cpu::quantize_row_q8_0 (whose d is rounded to f16), then
// cpu::matmul_ref on the dequantized x. A token's sum runs in the same
// order whatever n_tokens is: batch-invariant.
bool gemv_takes_quantized_input(WeightFormat format);
void quantize_activations(const float* x, int64_t n_tokens, int64_t cols, int8_t* q, float* d, cudaStream_t stream);
// The same for silu(gate) * up.  gate_up: [n_tokens, 2 * cols], gate then up.
void quantize_silu_mul(const float* gate_up, int64_t n_tokens, int64_t cols, int8_t* q, float* d, cudaStream_t stream);
// y[t, r] = (accumulate ? y[t, r] : 0) + sum_c W[r, c] * d[t, c / 32] * q[t, c].  y: [n_tokens, ldy].
void gemv_q8(const DeviceMatrix& w, const int8_t* q, const float* d, int64_t n_tokens, float* y, int64_t ldy,
             bool accumulate, cudaStream_t stream);
// One token of gemv_q8 that ends a tensor-parallel block, as gemv_to_peers
// for 16-bit weights: y = W x with gemv_q8's bits, each value also stored
// into the other ranks' memory (PeerRows, tensor_reduce.h). CPU twin: as
// gemv_q8's.
bool gemv_q8_to_peers_takes(const DeviceMatrix& w);
void gemv_q8_to_peers(const DeviceMatrix& w, const int8_t* q, const float* d, float* y, const PeerRows& peers,
                      cudaStream_t stream);

// The same product for decode batches on int8 tensor cores: the weights
// are read once per 64 tokens instead of once per 8. gemm_q8_init prepares
// the kernels on `device` and says whether it has int8 tensor cores (sm_80
// and later); call it before the first gemm_q8 there. gemm_q8_takes: the
// matrices it takes (Q8_0 or int8 rows, columns a multiple of 64). A (row,
// token) sum runs in an order fixed by the matrix shape and sm_count,
// whatever n_tokens is, but not the GEMV's order: the engine takes it only
// with batch_invariant off. Shapes whose columns split among blocks
// (gemm_q8_splits > 1) need a workspace of gemm_q8_workspace_floats floats.
// Other arguments as gemv_q8.
bool gemm_q8_init(int device);
bool gemm_q8_takes(const DeviceMatrix& w);
int gemm_q8_splits(int64_t rows, int64_t cols, int sm_count);
int64_t gemm_q8_workspace_floats(int64_t rows, int64_t cols, int sm_count);
void gemm_q8(const DeviceMatrix& w, const int8_t* q, const float* d, int64_t n_tokens, float* y, int64_t ldy,
             bool accumulate, int sm_count, float* workspace, cudaStream_t stream);

// out[i, :] = table[ids[i], :] as f32.  ids: [n] (device); out: [n, table.cols].
// CPU twin: cpu::dequantize_row.
void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

// out[i, :] = x[src_row(i), :] / rms(x[src_row(i), :]) * weight, where
// src_row(i) = rows ? rows[i] : i.  x: [*, n]; weight: [n]; out: [n_rows, n].
// With q and d, rows i < n_quantized of out are also quantized for gemv_q8
// (q: [n_quantized, n] int8, d: [n_quantized, n / 32] f32; n a multiple of
// 32), the bits of quantize_activations on out, in the same kernel where
// the row fits it. With low, rows i >= low_from of out are also rounded to
// low_type (F16 or BF16; the bits of convert_f32) into low: [n_rows -
// low_from, n], the 16-bit GEMM's input.
// CPU twin: cpu::rmsnorm.
void rmsnorm(const float* x, const int32_t* rows, const float* weight, float eps, int64_t n_rows, int64_t n, float* out,
             cudaStream_t stream, int8_t* q = nullptr, float* d = nullptr, int64_t n_quantized = 0,
             void* low = nullptr, DType low_type = DType::F16, int64_t low_from = 0);

// rmsnorm into out, and out quantized per row to E4M3 for the FP8 GEMM (the
// bits of rmsnorm then quantize_tokens_fp8), in one kernel where the row
// fits it (n a multiple of 4 up to 8192, 16-byte aligned rows). With
// write_out false only q and q_scale are wanted: the kernel then leaves out
// alone, and out is scratch for the unfused path (left unspecified).
//   out: [n_rows, n]; q: [n_rows, n] E4M3 bytes; q_scale: [n_rows].
void rmsnorm_fp8(const float* x, const int32_t* rows, const float* weight, float eps, int64_t n_rows, int64_t n,
                 float* out, uint8_t* q, float* q_scale, cudaStream_t stream, bool write_out = true);
// The same after a residual update from an FP8 GEMM's product before its
// scales: x[i, :] += update[i, :] * update_row_scale * update_token_scale[i]
// (x written back), then rmsnorm_fp8 of x: the bits of scale_product
// accumulating into x, then rmsnorm_fp8. q_scale may be update_token_scale
// (each row's is read before it is written).
//   x, update: [n_rows, n]; update_row_scale: [n]; update_token_scale: [n_rows].
void add_rmsnorm_fp8(float* x, const float* update, const float* update_row_scale, const float* update_token_scale,
                     const float* weight, float eps, int64_t n_rows, int64_t n, float* out, uint8_t* q,
                     float* q_scale, cudaStream_t stream, bool write_out = true);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, n + i], i < n, t < n_tokens.
//   gate_up: [n_tokens, 2n] (gate then up); out: [n_tokens, n].  CPU twin: cpu::silu_mul.
void silu_mul(const float* gate_up, int64_t n_tokens, int64_t n, float* out, cudaStream_t stream);

// silu_mul rounded to F16 or BF16 (`to`) for a GEMM's input: the bits of
// silu_mul then convert_f32.  out: [n_tokens, n] of `to`.
void silu_mul_convert(const float* gate_up, int64_t n_tokens, int64_t n, DType to, void* out, cudaStream_t stream);

// out[i] = (half or bfloat16) x[i], i < n.  to: F16 or BF16.
void convert_f32(const float* x, int64_t n, DType to, void* out, cudaStream_t stream);

// The FP8 GEMM's epilogue: y[t, r] = (accumulate ? y[t, r] : 0) +
// d[t, r] * row_scale[r] * token_scale[t].  d: [n_tokens, rows]; y: [n_tokens, ldy].
void scale_product(const float* d, int64_t n_tokens, int64_t rows, const float* row_scale, const float* token_scale,
                   float* y, int64_t ldy, bool accumulate, cudaStream_t stream);

// x per token to E4M3 for the FP8 GEMM, as quantize_rows does it (the same
// bits): scale[t] = max|x[t, :]| / 448 (1 for a row of zeros), q[t, c] =
// E4M3(x[t, c] / scale[t]), saturating. One block a token with the row held
// in registers where cols is a multiple of 4 up to 16384 (quantize_rows
// otherwise).
//   x: [n_tokens, cols] f32; q: [n_tokens, cols] E4M3 bytes; scale: [n_tokens].
void quantize_tokens_fp8(const float* x, int64_t n_tokens, int64_t cols, uint8_t* q, float* scale,
                         cudaStream_t stream);

// The FP8 FFN's middle, in one kernel: from the gate·up product of FP8
// tensor cores before its scales, act = silu(g) * u with g = d[t, i] *
// row_scale[i] * token_scale[t] and u the same at column n + i (the bits of
// scale_product then silu_mul), quantized per token to E4M3 as
// quantize_tokens_fp8 does it (the same bits as the three kernels).
// q_scale may be token_scale (each token's scale is read before it is
// written); q must not overlap d.
//   d: [n_tokens, 2n] f32; row_scale: [2n]; token_scale: [n_tokens];
//   q: [n_tokens, n] E4M3 bytes; q_scale: [n_tokens].
// n: silu_mul_fp8_supports(n) (a multiple of 4 up to 16384).
bool silu_mul_fp8_supports(int64_t n);
void silu_mul_fp8(const float* d, const float* row_scale, const float* token_scale, int64_t n_tokens, int64_t n,
                  uint8_t* q, float* q_scale, cudaStream_t stream);
// The same from the product rounded to BF16 (Gemm::fp8_product's BF16
// output): the bits of the f32 version on the widened values.
void silu_mul_fp8(const __nv_bfloat16* d, const float* row_scale, const float* token_scale, int64_t n_tokens,
                  int64_t n, uint8_t* q, float* q_scale, cudaStream_t stream);

// out[r - row0, :] = W[r, :] as f16, for r in [row0, row0 + n_rows); any format.
void dequantize_to_f16(const DeviceMatrix& w, int64_t row0, int64_t n_rows, __half* out, cudaStream_t stream);

// Quantizes src (any format) row by row into dst (I8Row or F8Row, same
// shape): scale = max|row| / 127 (int8) or / 448 (E4M3), q = round(w / scale).
// CPU twin: quantize_rows_ref in tests/backends/cuda.
void quantize_rows(const DeviceMatrix& src, const DeviceMatrix& dst, cudaStream_t stream);

// out[r] = the column of row r's largest logit: NaN counts as -inf, ties go
// to the lowest column, -1 when nothing is above -inf (Sampler's greedy rule).
// Each row is split over blocks of 4096 columns, which meet in the
// workspace: keys and counters [n_rows] each, zero before the call and
// left zero.
//   logits: [n_rows, ld] f32, first n_cols columns; out: [n_rows] int32.
// CPU twin: Sampler::sample with temperature 0.
struct ArgmaxWorkspace {
  unsigned long long* keys = nullptr;
  int32_t* counters = nullptr;
};
void argmax_rows(const float* logits, int64_t n_rows, int64_t n_cols, int64_t ld, int32_t* out,
                 const ArgmaxWorkspace& work, cudaStream_t stream);

// One row for sample_rows: a RowSampling, its penalties flattened into one
// array shared by the step's rows.
struct SampleRowArgs {
  int64_t row = 0;        // the logits row
  uint64_t draw = 0;      // RowSampling::draw
  float scale = 1.0f;     // RowSampling::scale
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int32_t top_k = 0;
  int32_t greedy = 0;     // 1: RowSampling::greedy
  int32_t penalty_begin = 0;  // [penalty_begin, penalty_end) of the penalties array
  int32_t penalty_end = 0;
};

// out[args[i].row] = the token that row samples by the row sampling rule
// (engine/row_sampling.h), -1 when none of its logits is above -inf.
//   logits: [*, ld] f32, first n_cols columns; each sampled row is
//   overwritten (its penalised logits, then its weights).
//   args: [n_rows]; penalties: the entries the args point into; out: indexed
//   by logits row. All in device memory. Rows must be distinct.
// CPU twin: sample_row_reference (the same token for every input).
void sample_rows(float* logits, int64_t n_cols, int64_t ld, const SampleRowArgs* args, int n_rows,
                 const PenaltyEntry* penalties, int32_t* out, cudaStream_t stream);

enum class RopeLayout { HalfSplit, Interleaved };

// The paged KV cache's element type.
enum class KvCacheType : uint8_t {
  F16,      // IEEE half
  Fp8E4M3,  // FP8 E4M3 of the value itself (no scale), saturated to +-448: half the bytes
};
inline int kv_cache_element_bytes(KvCacheType t) { return t == KvCacheType::Fp8E4M3 ? 1 : 2; }

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;      // at most 256
  int block_size = 0;    // KV positions per cache block
};

// Finishes q, k and v of n_tokens tokens for attention: adds biases, applies
// per-head RMSNorm (qwen3) and RoPE to q and k, and writes k and v into the
// cache at each token's slot (slot < 0: not written).
//   q: [n_tokens, stride] f32, in place (first n_heads * head_dim columns);
//   k: [n_tokens, stride] f32, scratch (overwritten; n_kv_heads * head_dim columns);
//   v: [n_tokens, stride] f32 (n_kv_heads * head_dim columns);
//   stride: elements between tokens (q, k and v are usually slices of one
//   [n_tokens, q_dim + 2 * kv_dim] buffer);
//   q_bias/k_bias/v_bias: [q_dim]/[kv_dim]/[kv_dim] or null;
//   q_norm/k_norm: [head_dim] or null;
//   rope_cos/rope_sin: [max_context, head_dim / 2];
//   positions, slots: [n_tokens], slot = block * block_size + position % block_size;
//   k_cache, v_cache: [n_blocks * block_size, n_kv_heads * head_dim] of
//   cache_type (this layer), each value rounded to it.
// CPU twin: the q/k/v section of CpuModelRunner::forward.
struct QkvFinishArgs {
  float* q = nullptr;
  float* k = nullptr;
  const float* v = nullptr;
  int64_t stride = 0;
  const float* q_bias = nullptr;
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  float norm_eps = 0;
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
  RopeLayout rope_layout = RopeLayout::HalfSplit;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  KvCacheType cache_type = KvCacheType::F16;
  // With FP8 weights, q, k and v may hold the GEMM's product before its
  // scales: each value is then taken as value * row_scale[c] *
  // token_scale[t] (c: its column of the q·k·v row; scale_product's bits).
  const float* row_scale = nullptr;    // [q_dim + 2 kv_dim]
  const float* token_scale = nullptr;  // [n_tokens]
};
void qkv_finish(const QkvFinishArgs& args, const AttentionShape& shape, int64_t n_tokens, cudaStream_t stream);

// One token's q·k·v product with qkv_finish fused into its end, a launch
// fewer: the same bits as gemv (16-bit weights) or gemv_q8 (Q8_0, int8
// rows) of the token followed by qkv_finish of it. The GEMV's blocks take
// whole RoPE pairs and finish them (qkv_epilogue.cuh).
//   y: [q_dim + 2 kv_dim] f32, the product; args.q, args.k and args.v point
//   into it at 0, q_dim and q_dim + kv_dim (args.stride is not read).
// gemv_finishes_qkv: whether w, y, args and shape allow it: F16, BF16, Q8_0
// or int8 rows of q·k·v (8-bit: at most 4096 columns), heads of at most 256
// that hold whole blocks of rows (8, Q8_0: 4), no q/k norm, no FP8 scales.
bool gemv_finishes_qkv(const DeviceMatrix& w, const float* y, const QkvFinishArgs& args, const AttentionShape& shape);
void gemv_qkv(const DeviceMatrix& w, const float* x, float* y, const QkvFinishArgs& args, const AttentionShape& shape,
              cudaStream_t stream);
void gemv_q8_qkv(const DeviceMatrix& w, const int8_t* q, const float* d, float* y, const QkvFinishArgs& args,
                 const AttentionShape& shape, cudaStream_t stream);

// Causal attention over the paged cache: token t (at position positions[t])
// attends to positions [0, positions[t]] of its sequence, whose blocks are
// block_tables[table_offsets[t] + p / block_size].
//   q: [n_tokens, q_stride] f32 (first n_heads * head_dim columns);
//   out: [n_tokens, n_heads * head_dim] f32.
// n_splits > 1 divides each token's positions into that many runs, computed
// by separate blocks and merged at the end (more parallelism for a few
// tokens over long contexts); it needs split_partials
// [kAttentionSplitSlots, 258] f32 and split_counters [kAttentionSplitSlots]
// int32, zeroed once (the kernel leaves them zero).
// Each (token, head) is computed alone, and its result depends on n_splits
// only (not on heads_per_block): with a fixed n_splits results are
// batch-invariant.
// CPU twin: CpuModelRunner::attention (tests: reference_attention).
constexpr int64_t kAttentionSplitSlots = 2048;  // n_tokens * n_heads * n_splits, at most
constexpr int64_t kMaxAttentionSplits = 16;
struct AttentionArgs {
  const float* q = nullptr;
  int64_t q_stride = 0;
  // [n_blocks * block_size, n_kv_heads * head_dim] of cache_type (this
  // layer). An E4M3 cache gives the bits of an f16 cache holding the same
  // values: every kernel widens it to f16 first, which is exact.
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  KvCacheType cache_type = KvCacheType::F16;
  const int32_t* positions = nullptr;
  const int32_t* table_offsets = nullptr;
  const int32_t* block_tables = nullptr;
  float scale = 1.0f;
  float* out = nullptr;
  float* split_partials = nullptr;
  int32_t* split_counters = nullptr;
  // Every token is its sequence's only one in the step (decode): positions
  // below positions[t] were cached by earlier steps, so the kernel may read
  // them before the kernel before it finishes (launch.h).
  bool decode_only = false;
  // With out_q (head_dim a multiple of 32): the output rows also quantized
  // for the 8-bit GEMV, the bits of quantize_activations on out
  // (out_q: [n_tokens, n_heads * head_dim] int8, out_d: [.., / 32] f32).
  int8_t* out_q = nullptr;
  float* out_d = nullptr;
};
// Query heads per block: those of one KV head (up to
// kMaxAttentionHeadsPerBlock, a power of two) read each cached key and value
// once for all of them, where such blocks alone fill the GPU (sm_count); 1
// otherwise. A head's result does not depend on it.
constexpr int kMaxAttentionHeadsPerBlock = 8;
int attention_heads_per_block(const AttentionShape& shape, int64_t n_tokens, int sm_count);
// Splits that keep about two blocks per SM busy for n_tokens tokens (1 when
// the blocks alone fill the GPU), within the workspace.
int attention_splits(const AttentionShape& shape, int64_t n_tokens, int sm_count, int heads_per_block = 1);
void paged_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, int n_splits,
                     cudaStream_t stream, int heads_per_block = 1);

// Decode attention on tensor cores (grouped_decode_attention.cu): one block
// per (token, KV head), the KV head's query heads (up to 16) as the rows of
// the mma tiles, the token's cached positions [0, positions[t]] in tiles of
// 64 staged in shared memory. For batches whose blocks fill the GPU
// (grouped_decode_attention_takes); paged_attention serves the others.
// With out_q it quantizes its output rows as paged_attention does (the
// bits of quantize_activations on out). q and the softmax weights are
// rounded to f16; a token's result depends on its own q and cache only
// (batch-invariant in itself, but the runner's choice between the two
// kernels depends on the batch, so batch_invariant keeps paged_attention).
// Head sizes 32, 64, 96 and 128 on sm_80 and later.
// CPU twin: CpuModelRunner::attention (tests: reference_paged_attention).
// The deepest copy pipeline (2 or 3 stages) `device` runs it with for this
// shape and cache type (an E4M3 cache's stages are smaller), 0 where it does
// not run it at all; also lets its kernels take the shared memory they need
// (call once a device, before the first use).
int grouped_decode_attention_init(const AttentionShape& shape, int device, KvCacheType cache = KvCacheType::F16);
// True when n_tokens tokens give a block for every third SM or more.
bool grouped_decode_attention_takes(const AttentionShape& shape, int64_t n_tokens, int sm_count);
// The pipeline depth the engine takes for n_tokens tokens, at most
// max_stages (what grouped_decode_attention_init returned).
int grouped_decode_attention_stages(const AttentionShape& shape, int64_t n_tokens, int sm_count, int max_stages);
// stages: 2, or 3 where grouped_decode_attention_init allowed it; the bits
// are the same either way.
void grouped_decode_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, int stages,
                              cudaStream_t stream);

// Causal attention of prompt tokens on tensor cores (flash-attention style):
// each query tile, up to kPrefillTileTokens consecutive tokens of one
// sequence, meets that sequence's cached positions [0, kv_len) in tiles of
// 64 (cached context from earlier chunks included), with an online softmax.
// q and the softmax weights are rounded to f16 for the tensor cores (the
// cache is f16); sums are f32. A token's result depends on its own q and
// cache only, not on the other tokens of its tile: batch-invariant.
//   tiles: [n_tiles, 3] int32 (device): first token, token count, kv_len;
//   the tokens index args' arrays (positions, table_offsets, q, out).
// Head sizes 32, 48, 64, 96 and 128 on sm_80 and later
// (prefill_attention_init); paged_attention serves the others.
// CPU twin: CpuModelRunner::attention (tests: reference_attention).
constexpr int64_t kPrefillTileTokens = 64;
// True when `device` runs prefill_attention for this shape; then also lets
// its kernels take the shared memory they need there (call once a device,
// before the first prefill_attention on it).
bool prefill_attention_init(const AttentionShape& shape, int device);
// Host side: groups tokens [first, first + n_tokens) into tiles of
// consecutive positions of one sequence (`sequence[t]` equal), at most
// kPrefillTileTokens each; writes them to `tiles` (room for 3 * n_tokens)
// and returns how many.
int64_t plan_prefill_tiles(const int32_t* positions, const int32_t* sequence, int64_t first, int64_t n_tokens,
                           int32_t* tiles);
// Key splits (n_splits > 1): each tile's key range in n_splits parts, one
// block each, weighed together by a second kernel; the result differs from
// one split's in rounding only (not batch-invariant: the runner keeps one
// split under batch_invariant). Needs args.split_partials with
// prefill_attention_workspace_floats(shape) floats, the prompt tokens the
// tiles cover (n_tokens, from tiles[0]'s first token on, consecutive) and
// n_splits * n_tokens <= kPrefillSplitRows.
constexpr int64_t kMaxPrefillSplits = 8;
constexpr int64_t kPrefillSplitRows = 1024;
int64_t prefill_attention_workspace_floats(const AttentionShape& shape);
// The splits for n_tiles tiles of n_tokens tokens whose longest key range
// is max_kv_len: about a block an SM (two splits where the tiles nearly
// fill the SMs), at least four key tiles of 64 a split, within the
// workspace; 1 when the tiles alone fill the GPU.
int prefill_attention_splits(const AttentionShape& shape, int64_t n_tiles, int64_t n_tokens, int max_kv_len,
                             int sm_count);
void prefill_attention(const AttentionArgs& args, const AttentionShape& shape, const int32_t* tiles, int64_t n_tiles,
                       cudaStream_t stream, int n_splits = 1, int64_t n_tokens = 0);

}  // namespace tandem::cuda
