// Decode GEMV: each warp takes two weight rows, 16-byte weight loads, up to
// 8 tokens per pass over the weights.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxTokens = 8;
constexpr int kRowsPerWarp = 2;

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
  __device__ static void decode(const uint4& raw, float* out) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
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

// Adds one 16-byte vector of each of R rows, times x, into acc[row][token].
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

template <WeightFormat D, int NT, int R>
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
    const float4* xv = reinterpret_cast<const float4*>(x + t * cols + c0);
    float xs[WV::kElems];
#pragma unroll
    for (int j = 0; j < WV::kElems / 4; ++j) {
      const float4 xx = __ldg(xv + j);
      xs[4 * j] = xx.x;
      xs[4 * j + 1] = xx.y;
      xs[4 * j + 2] = xx.z;
      xs[4 * j + 3] = xx.w;
    }
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

// y[t, r] (+)= W[r, :] . x[t, :] for t < NT.  x: [NT, cols], y: [NT, ldy].
// Each warp takes kRowsPerWarp rows, so one load of x serves them all.
template <WeightFormat D, int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                const float* __restrict__ x, float* __restrict__ y, int64_t ldy, bool accumulate) {
  using WV = WeightVector<D>;
  constexpr int R = kRowsPerWarp;
  const int lane = threadIdx.x % 32;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32) * R;
  if (r0 >= rows) return;
  const int64_t n_vec = cols / WV::kElems;
  const uint4* row[R];
  const __half* row_scales[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t r = min(r0 + i, rows - 1);  // a missing last row repeats the one before, unwritten
    row[i] = reinterpret_cast<const uint4*>(weights) + r * n_vec;
    row_scales[i] = D == WeightFormat::Q8_0 ? static_cast<const __half*>(scales) + r * (cols / 32) : nullptr;
  }

  float acc[R][NT];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[i][t] = 0.0f;

  // 2 * R loads in flight per lane, then the tail; a lane's vectors are
  // visited in the same order either way.
  int64_t v = lane;
  for (; v + 32 < n_vec; v += 64) {
    uint4 w0[R], w1[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      w0[i] = __ldcs(row[i] + v);
      w1[i] = __ldcs(row[i] + v + 32);
    }
    accumulate_vectors<D, NT, R>(w0, v, x, cols, row_scales, acc);
    accumulate_vectors<D, NT, R>(w1, v + 32, x, cols, row_scales, acc);
  }
  for (; v < n_vec; v += 32) {
    uint4 w0[R];
#pragma unroll
    for (int i = 0; i < R; ++i) w0[i] = __ldcs(row[i] + v);
    accumulate_vectors<D, NT, R>(w0, v, x, cols, row_scales, acc);
  }

#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float s = acc[i][t];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
      if constexpr (D == WeightFormat::I8Row || D == WeightFormat::F8Row)
        s *= static_cast<const float*>(scales)[min(r0 + i, rows - 1)];
      if (lane == 0 && r0 + i < rows) {
        float* out = y + t * ldy + r0 + i;
        *out = accumulate ? *out + s : s;
      }
    }
  }
}

template <WeightFormat D>
void launch_group(const DeviceMatrix& w, const float* x, int nt, float* y, int64_t ldy, bool accumulate,
                  cudaStream_t stream) {
  const int64_t rows_per_block = kWarpsPerBlock * kRowsPerWarp;
  const dim3 grid(static_cast<unsigned>((w.rows + rows_per_block - 1) / rows_per_block));
  const dim3 block(kWarpsPerBlock * 32);
  switch (nt) {
#define TANDEM_GEMV_CASE(N)                                                                             \
  case N:                                                                                               \
    gemv_kernel<D, N><<<grid, block, 0, stream>>>(w.data, w.scales, w.rows, w.cols, x, y, ldy, accumulate); \
    break;
    TANDEM_GEMV_CASE(1)
    TANDEM_GEMV_CASE(2)
    TANDEM_GEMV_CASE(3)
    TANDEM_GEMV_CASE(4)
    TANDEM_GEMV_CASE(5)
    TANDEM_GEMV_CASE(6)
    TANDEM_GEMV_CASE(7)
    TANDEM_GEMV_CASE(8)
#undef TANDEM_GEMV_CASE
  }
}

}  // namespace

int64_t gemv_vector_elems(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return 4;
    case WeightFormat::F16:
    case WeightFormat::BF16: return 8;
    case WeightFormat::Q8_0: return 32;  // the scale block, which also holds two 16-byte loads
    case WeightFormat::I8Row:
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
  check(w.cols % gemv_vector_elems(w.format) == 0,
        "internal: GEMV needs cols to be a multiple of " + std::to_string(gemv_vector_elems(w.format)));
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, n_tokens - t0));
    const float* xg = x + t0 * w.cols;
    float* yg = y + t0 * ldy;
    switch (w.format) {
      case WeightFormat::F32: launch_group<WeightFormat::F32>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::F16: launch_group<WeightFormat::F16>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::BF16: launch_group<WeightFormat::BF16>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::Q8_0: launch_group<WeightFormat::Q8_0>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::I8Row: launch_group<WeightFormat::I8Row>(w, xg, nt, yg, ldy, accumulate, stream); break;
      case WeightFormat::F8Row: launch_group<WeightFormat::F8Row>(w, xg, nt, yg, ldy, accumulate, stream); break;
    }
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
