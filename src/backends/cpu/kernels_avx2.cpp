// Kernel variant for AVX2 + FMA + F16C (compiled with -mavx2 -mfma -mf16c).
// Everything here is internal to this file: see kernels_simd.inc.
#include <immintrin.h>

#include <cmath>

#include "backends/cpu/kernel_set.h"
#include "backends/cpu/q8_0_rows8.h"

namespace tandem::cpu {
namespace {

struct Isa {
  using V = __m256;
  static constexpr int kLanes = 8;
  // 16 ymm registers: a 4 x 3 tile is 12 accumulators + 3 x + 1 weight.
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 3;
  static constexpr int kGemvRows12 = 4;  // GEMV rows per tile for 1-2 tokens
  static constexpr int kGemvRows34 = 2;  // and for 3-4 tokens

  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  // max(a, b) and min(a, b) return b where either is NaN.
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integer-valued n in [-126, 127].
  static V pow2(V n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  // [sum a, sum b, sum c, sum d]
  static __m128 reduce4(V a, V b, V c, V d) {
    const __m256 ab = _mm256_hadd_ps(a, b);
    const __m256 cd = _mm256_hadd_ps(c, d);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
  }
  static void dequant_q8_block(const BlockQ8_0& b, float* out) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(b.d));
    for (int j = 0; j < 4; ++j) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + 8 * j));
      _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
  }
  // u8 x s8 -> i32x8; |products| <= 128 * 127, so the i16 pair sums cannot saturate.
  // acc + dot_u8s8(u, s)
  static __m256i dot_add_u8s8(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  static __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
};

#include "backends/cpu/kernels_simd.inc"

}  // namespace

const KernelSet kAvx2Kernels{KernelVariant::Avx2, "avx2", kGemvMaxTokens, &matmul_rows,
                             &quantize_activations,
                             &vec_dot, &vec_axpy, &vec_sum_squares, &vec_scale_mul, &vec_silu_mul, &vec_exp_sum,
                             &vec_dot_rows, &vec_weighted_sum, &vec_dot_rows_group,
                             &vec_weighted_sum_group, true, true};

}  // namespace tandem::cpu
