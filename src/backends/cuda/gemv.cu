// Decode GEMV in float arithmetic, for every weight format: the block layout
// of gemv_block.cuh (8 warps over 4 rows, a round of 16-byte weight loads
// issued before any is used), one load of x serving the 4 rows, up to 8
// tokens per pass over the weights.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <string>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gemv_block.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/peer_rows.cuh"
#include "backends/cuda/qkv_epilogue.cuh"

namespace tandem::cuda {
namespace {

using gemv_block::kMaxTokens;
using gemv_block::kThreads;
using gemv_block::kUnroll;

// Decodes one 16-byte load of weights into floats.
template <WeightFormat D>
struct WeightVector;

template <>
struct WeightVector<WeightFormat::F32> {
  static constexpr int kElems = 4;
  __device__ static void decode(const uint4& raw, float* out) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  }
};

template <>
struct WeightVector<WeightFormat::F16> {
  static constexpr int kElems = 8;
  __device__ static void decode(const uint4& raw, float* out) {
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
};

template <>
struct WeightVector<WeightFormat::BF16> {
  static constexpr int kElems = 8;
  // A bf16 is the high half of its f32: one shift or mask a value.
  __device__ static void decode(const uint4& raw, float* out) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
};

template <>
struct WeightVector<WeightFormat::Q8_0> {
  static constexpr int kElems = 16;
  // Unscaled quants; the caller applies the block scale.
  __device__ static void decode(const uint4& raw, float* out) {
    const int8_t* q = reinterpret_cast<const int8_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 16; ++i) out[i] = static_cast<float>(q[i]);
  }
};

template <>
struct WeightVector<WeightFormat::I8Row> : WeightVector<WeightFormat::Q8_0> {};

template <>
struct WeightVector<WeightFormat::F8Row> {
  static constexpr int kElems = 16;
  // Unscaled E4M3 values; the caller applies the row scale.
  __device__ static void decode(const uint4& raw, float* out) {
    const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(p[i], __NV_E4M3));
      const float2 f = __half22float2(h);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
};

// How the GEMV reads its input x[t, c].
enum class Input {
  Plain,    // x: [NT, cols]
  SiluMul,  // x: [NT, 2 * cols], gate then up: the input is silu(gate) * up
};

// Loads x[t, c0 .. c0 + N) of token t as floats.
template <Input In, int N>
__device__ __forceinline__ void load_input(const float* __restrict__ x, int64_t cols, int t, int64_t c0, float* out) {
  if constexpr (In == Input::Plain) {
    const float4* xv = reinterpret_cast<const float4*>(x + t * cols + c0);
#pragma unroll
    for (int j = 0; j < N / 4; ++j) {
      const float4 xx = __ldg(xv + j);
      out[4 * j] = xx.x;
      out[4 * j + 1] = xx.y;
      out[4 * j + 2] = xx.z;
      out[4 * j + 3] = xx.w;
    }
  } else {
    const float4* gv = reinterpret_cast<const float4*>(x + t * 2 * cols + c0);
    const float4* uv = reinterpret_cast<const float4*>(x + t * 2 * cols + cols + c0);
#pragma unroll
    for (int j = 0; j < N / 4; ++j) {
      const float4 g = __ldg(gv + j), u = __ldg(uv + j);
      // The same expression as silu_mul_kernel, so both paths give the same bits.
      out[4 * j] = g.x / (1.0f + __expf(-g.x)) * u.x;
      out[4 * j + 1] = g.y / (1.0f + __expf(-g.y)) * u.y;
      out[4 * j + 2] = g.z / (1.0f + __expf(-g.z)) * u.z;
      out[4 * j + 3] = g.w / (1.0f + __expf(-g.w)) * u.w;
    }
  }
}

// Adds one 16-byte vector of each of R rows, times x, into acc[row][token].
template <WeightFormat D, Input In, int NT, int R>
__device__ __forceinline__ void accumulate_vectors(const uint4 (&raw)[R], int64_t vec, const float* __restrict__ x,
                                                   int64_t cols, const __half* const (&row_scales)[R],
                                                   float (&acc)[R][NT]) {
  using WV = WeightVector<D>;
  float w[R][WV::kElems];
#pragma unroll
  for (int i = 0; i < R; ++i) WV::decode(raw[i], w[i]);
  const int64_t c0 = vec * WV::kElems;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    float xs[WV::kElems];
    load_input<In, WV::kElems>(x, cols, t, c0, xs);
#pragma unroll
    for (int i = 0; i < R; ++i) {
      float sum = 0.0f;
#pragma unroll
      for (int e = 0; e < WV::kElems; ++e) sum = fmaf(w[i][e], xs[e], sum);
      if constexpr (D == WeightFormat::Q8_0) {
        acc[i][t] = fmaf(__half2float(row_scales[i][c0 / 32]), sum, acc[i][t]);
      } else {
        acc[i][t] += sum;
      }
    }
  }
}

// W[r, :] . x[t, :] for t < NT, for the block's R rows r = row_of(i) (a row
// past `rows` is read as the last one); before_wait() once the first
// weights are requested and after_wait() after the wait
// (gemv_block::visit_vectors), then store(i, t, sum) once for each (int8
// and FP8 rows: the sum before the row's scale, row_scaled). Thread j takes the row
// vectors j, j + 256, ... of each. A token's sum depends only on the thread
// layout, not on NT or R, so results are batch-invariant.
template <WeightFormat D, Input In, int NT, int R, typename RowOf, typename BeforeWait,
          typename Store, typename AfterWait>
__device__ __forceinline__ void gemv_rows(const void* __restrict__ weights, const void* __restrict__ scales,
                                          int64_t rows, int64_t cols, const float* __restrict__ x, RowOf&& row_of,
                                          BeforeWait&& before_wait, Store&& store, AfterWait&& after_wait) {
  using WV = WeightVector<D>;
  const int64_t n_vec = cols / WV::kElems;
  const uint4* row[R];
  const __half* row_scales[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t r = min(row_of(i), rows - 1);
    row[i] = reinterpret_cast<const uint4*>(weights) + r * n_vec;
    row_scales[i] = D == WeightFormat::Q8_0 ? static_cast<const __half*>(scales) + r * (cols / 32) : nullptr;
  }

  float acc[R][NT];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[i][t] = 0.0f;

  uint4 w[kUnroll][R];
  gemv_block::visit_vectors(
      n_vec,
      [&](int u, int64_t vec) {
#pragma unroll
        for (int i = 0; i < R; ++i) w[u][i] = __ldcs(row[i] + vec);
      },
      [&](int u, int64_t vec) { accumulate_vectors<D, In, NT, R>(w[u], vec, x, cols, row_scales, acc); },
      before_wait, after_wait);
  gemv_block::reduce_rows<R, NT>(acc, store);
}

// A row's sum times its scale, for formats with one (int8 and FP8 rows).
template <WeightFormat D>
__device__ __forceinline__ float row_scaled(float s, const void* scales, int64_t r) {
  if constexpr (D == WeightFormat::I8Row || D == WeightFormat::F8Row) return s * static_cast<const float*>(scales)[r];
  return s;
}

// y[t, r] (+)= W[r, :] . x[t, :] for t < NT.  y: [NT, ldy].
// Block b takes rows [b R, b R + R).
template <WeightFormat D, Input In, int NT, int R>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                const float* __restrict__ x, float* __restrict__ y, int64_t ldy, bool accumulate) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * R;
  gemv_rows<D, In, NT, R>(
      weights, scales, rows, cols, x, [&](int i) { return r0 + i; }, [] {},
      [&](int i, int t, float s) {
        const int64_t r = r0 + i;
        s = row_scaled<D>(s, scales, min(r, rows - 1));
        if (r < rows) {  // missing last rows repeat the one before, unwritten
          float* out = y + t * ldy + r;
          *out = accumulate ? *out + s : s;
        }
      },
      [] {});
}

// gemv_kernel at one token without accumulation, each sum also stored into
// the other ranks' peer rows (peer_rows.cuh) with the slot's next epoch.
template <WeightFormat D, Input In, int R>
__global__ void __launch_bounds__(kThreads)
    gemv_peer_kernel(const void* __restrict__ weights, int64_t rows, int64_t cols, const float* __restrict__ x,
                     float* __restrict__ y, PeerRows peers) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * R;
  uint32_t epoch = 0;  // read by the lanes that store, as the loop starts
  gemv_rows<D, In, 1, R>(
      weights, nullptr, rows, cols, x, [&](int i) { return r0 + i; }, [] {},
      [&](int i, int, float s) {
        const int64_t r = r0 + i;
        if (r < rows) {
          y[r] = s;
          peer_rows::store(peers, epoch, r, s);
        }
      },
      [&] {
        if (threadIdx.x < R) epoch = *peers.epoch + 1;
      });
}

// Rows per block: 8 for 16-bit weights at one token (twice the loads in
// flight a thread; batch-1 decode of the 8B shape +0.7% on an H100, +2.6%
// on an H200), else 4. A row's sum does not depend on it.
template <WeightFormat D, int NT>
constexpr int rows_per_block() {
  return (D == WeightFormat::F16 || D == WeightFormat::BF16) && NT == 1 ? 8 : gemv_block::kRowsPerBlock;
}

// The one-token q·k·v GEMV with qkv_finish at its end (qkv_epilogue.cuh):
// gemv_kernel's sums, the block's rows placed as RoPE pairs.
template <WeightFormat D, int R, RopeLayout L>
__global__ void __launch_bounds__(kThreads)
    gemv_qkv_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                    const float* __restrict__ x, float* __restrict__ y, QkvFinishArgs args, AttentionShape shape) {
  static_assert(R == qkv_epilogue::block_rows(D), "gemv_finishes_qkv checks heads against block_rows");
  __shared__ qkv_epilogue::Row<R, L, false> lane_row[R];
  gemv_rows<D, Input::Plain, 1, R>(
      weights, scales, rows, cols, x,
      [&](int i) { return qkv_epilogue::block_row<R, L>(static_cast<int>(blockIdx.x), i, shape.head_dim); },
      [&] {
        if (threadIdx.x < R) lane_row[threadIdx.x].load(args, shape, static_cast<int>(blockIdx.x), static_cast<int>(threadIdx.x), nullptr);
      },
      [&](int i, int, float s) { lane_row[i].finish(args, shape, s, y); }, [] {});
}

template <WeightFormat D, Input In>
void launch_group(const DeviceMatrix& w, const float* x, int nt, float* y, int64_t ldy, bool accumulate,
                  cudaStream_t stream) {
  gemv_block::with_token_count(nt, [&](auto n) {
    constexpr int NT = decltype(n)::value;
    constexpr int R = rows_per_block<D, NT>();
    const dim3 grid(static_cast<unsigned>((w.rows + R - 1) / R));
    launch(gemv_kernel<D, In, NT, R>, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols, x, y, ldy, accumulate);
  });
}

template <Input In>
void gemv_groups(const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t ldy,
                 bool accumulate, cudaStream_t stream) {
  check(w.cols % gemv_vector_elems(w.format) == 0,
        "internal: GEMV needs cols to be a multiple of " + std::to_string(gemv_vector_elems(w.format)));
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, n_tokens - t0));
    const float* xg = x + t0 * x_stride;
    float* yg = y + t0 * ldy;
    switch (w.format) {
      case WeightFormat::F32: launch_group<WeightFormat::F32, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::F16: launch_group<WeightFormat::F16, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::BF16: launch_group<WeightFormat::BF16, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::Q8_0: launch_group<WeightFormat::Q8_0, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::I8Row: launch_group<WeightFormat::I8Row, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::F8Row: launch_group<WeightFormat::F8Row, In>(w, xg, nt, yg, ldy, accumulate, stream); break;
    }
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool gemv_finishes_qkv(const DeviceMatrix& w, const float* y, const QkvFinishArgs& args, const AttentionShape& shape) {
  const int64_t q_dim = int64_t{shape.n_heads} * shape.head_dim, kv_dim = int64_t{shape.n_kv_heads} * shape.head_dim;
  const int rows = qkv_epilogue::block_rows(w.format);
  const bool rows_fit = rows == 8 ? qkv_epilogue::fits<8>(args, shape) : rows == 4 && qkv_epilogue::fits<4>(args, shape);
  // The 8-bit kernel is the one-vector kernel's layout: rows of at most
  // kThreads vectors (wider ones keep gemv_q8's two load slots).
  const bool eight_bit = w.format == WeightFormat::Q8_0 || w.format == WeightFormat::I8Row;
  return rows_fit && w.rows == q_dim + 2 * kv_dim && args.q == y && args.k == y + q_dim &&
         args.v == y + q_dim + kv_dim && w.cols % gemv_vector_elems(w.format) == 0 &&
         (!eight_bit || w.cols / 16 <= kThreads);
}

void gemv_qkv(const DeviceMatrix& w, const float* x, float* y, const QkvFinishArgs& args, const AttentionShape& shape,
              cudaStream_t stream) {
  check((w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) && gemv_finishes_qkv(w, y, args, shape),
        "internal: gemv_qkv takes one 16-bit q·k·v product that gemv_finishes_qkv accepts");
  auto run = [&](auto format) {
    constexpr WeightFormat D = decltype(format)::value;
    constexpr int R = rows_per_block<D, 1>();
    const dim3 grid(static_cast<unsigned>(w.rows / R));
    if (args.rope_layout == RopeLayout::Interleaved)
      launch(gemv_qkv_kernel<D, R, RopeLayout::Interleaved>, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols,
             x, y, args, shape);
    else
      launch(gemv_qkv_kernel<D, R, RopeLayout::HalfSplit>, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols,
             x, y, args, shape);
  };
  if (w.format == WeightFormat::F16) run(std::integral_constant<WeightFormat, WeightFormat::F16>{});
  else run(std::integral_constant<WeightFormat, WeightFormat::BF16>{});
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

bool gemv_to_peers_takes(const DeviceMatrix& w) {
  return (w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) && w.cols % gemv_vector_elems(w.format) == 0;
}

void gemv_to_peers(const DeviceMatrix& w, const float* x, bool silu_mul, float* y, const PeerRows& peers,
                   cudaStream_t stream) {
  check(gemv_to_peers_takes(w) && peers.n_peers > 0 && peers.n_peers <= PeerRows::kMaxPeers,
        "internal: gemv_to_peers takes 16-bit weights and at least one peer");
  auto run = [&](auto format) {
    constexpr WeightFormat D = decltype(format)::value;
    constexpr int R = rows_per_block<D, 1>();
    const dim3 grid(static_cast<unsigned>((w.rows + R - 1) / R));
    if (silu_mul)
      launch(gemv_peer_kernel<D, Input::SiluMul, R>, grid, kThreads, stream, w.data, w.rows, w.cols, x, y, peers);
    else
      launch(gemv_peer_kernel<D, Input::Plain, R>, grid, kThreads, stream, w.data, w.rows, w.cols, x, y, peers);
  };
  if (w.format == WeightFormat::F16) run(std::integral_constant<WeightFormat, WeightFormat::F16>{});
  else run(std::integral_constant<WeightFormat, WeightFormat::BF16>{});
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

int64_t gemv_vector_elems(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return 4;
    case WeightFormat::F16:
    case WeightFormat::BF16: return 8;
    case WeightFormat::Q8_0: return 32;  // the scale block, which also holds two 16-byte loads
    case WeightFormat::I8Row: return 32;  // gemv_q8 quantizes x in blocks of 32
    case WeightFormat::F8Row: return 16;
  }
  return 16;
}

WeightFormat weight_format_of(DType dtype) {
  switch (dtype) {
    case DType::F32: return WeightFormat::F32;
    case DType::F16: return WeightFormat::F16;
    case DType::BF16: return WeightFormat::BF16;
    case DType::Q8_0: return WeightFormat::Q8_0;
    default: throw Error(std::string("the CUDA engine has no kernels for ") + std::string(dtype_name(dtype)) + " weights");
  }
}

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::F16: return "f16";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::Q8_0: return "q8_0";
    case WeightFormat::I8Row: return "int8";
    case WeightFormat::F8Row: return "fp8";
  }
  return "?";
}

int64_t weight_format_bytes(WeightFormat format) {
  return format == WeightFormat::F32 ? 4 : format == WeightFormat::F16 || format == WeightFormat::BF16 ? 2 : 1;
}

void gemv(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
          cudaStream_t stream) {
  gemv_groups<Input::Plain>(w, x, w.cols, n_tokens, y, ldy, accumulate, stream);
}

void gemv_silu_mul(const DeviceMatrix& w, const float* gate_up, int64_t n_tokens, float* y, int64_t ldy,
                   bool accumulate, cudaStream_t stream) {
  gemv_groups<Input::SiluMul>(w, gate_up, 2 * w.cols, n_tokens, y, ldy, accumulate, stream);
}

}  // namespace tandem::cuda
