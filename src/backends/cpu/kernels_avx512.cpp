// Kernel variant for AVX-512 F/BW/VL/DQ + VNNI (compiled with those flags).
// Everything here is internal to this file: see kernels_simd.inc.
#include <immintrin.h>

#include <cmath>

#include "backends/cpu/kernel_set.h"
#include "backends/cpu/q8_0_rows8.h"

namespace tandem::cpu {
namespace {

struct Isa {
  using V = __m512;
  static constexpr int kLanes = 16;
  // 32 zmm registers: a 4 x 6 tile is 24 accumulators + 6 x + 1 weight.
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 6;
  static constexpr int kGemvRows12 = 4;
  static constexpr int kGemvRows34 = 4;

  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  // max(a, b) and min(a, b) return b where either is NaN.
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integer-valued n in [-126, 127].
  static V pow2(V n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static __m256 halves(V a) {
    return _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  }
  // [sum a, sum b, sum c, sum d]
  static __m128 reduce4(V a, V b, V c, V d) {
    const __m256 ab = _mm256_hadd_ps(halves(a), halves(b));
    const __m256 cd = _mm256_hadd_ps(halves(c), halves(d));
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
  }
  static void dequant_q8_block(const BlockQ8_0& b, float* out) {
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b.d));
    for (int j = 0; j < 2; ++j) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16 * j));
      _mm512_storeu_ps(out + 16 * j, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))));
    }
  }
  // u8 x s8 -> i32x8 with VNNI: one instruction, no i16 intermediate.
  // acc + dot_u8s8(u, s), in one VNNI instruction
  static __m256i dot_add_u8s8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
  static __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
  }
};

#include "backends/cpu/kernels_simd.inc"

}  // namespace

const KernelSet kAvx512Kernels{KernelVariant::Avx512, "avx512", kGemvMaxTokens, &matmul_rows,
                               &quantize_activations,
                               &vec_dot, &vec_axpy, &vec_sum_squares, &vec_scale_mul, &vec_silu_mul, &vec_exp_sum,
                               &vec_dot_rows, &vec_weighted_sum, &vec_dot_rows_group,
                               &vec_weighted_sum_group, true, false};

}  // namespace tandem::cpu
