// The arithmetic that sampling shares between the host (Sampler, the row
// sampling reference) and the GPU (cuda::sample_rows): one source, so both
// compute the same bits. Only IEEE-754 +, -, *, compares and bit moves;
// callers must not contract a * b + c into one fused operation (ISO C++
// mode does not; the CUDA file that includes this builds with --fmad=false).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define TANDEM_HOST_DEVICE __host__ __device__
#else
#define TANDEM_HOST_DEVICE
#endif

namespace tandem {

TANDEM_HOST_DEVICE inline uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

TANDEM_HOST_DEVICE inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// exp(x), accurate to about 2 ulp for x in [-87, 88]; 0 below -87 (where the
// true result is at most 1.7e-38: irrelevant next to the max weight of 1).
// NaN must not reach it. It vectorises, and its result does not depend on the
// C library or the device.
TANDEM_HOST_DEVICE inline float exp_lane(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split in two: kLn2Hi has few mantissa bits, so n * kLn2Hi is exact.
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  // Adding 1.5 * 2^23 rounds to an integer that lands in the low mantissa bits.
  constexpr float kRound = 12582912.0f;
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;  // round(xc / ln 2), in [-126, 127]
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;  // r in [-ln2 / 2, ln2 / 2]
  // Taylor series to r^6: the truncation error is below 1.3e-7 relative.
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t n_int = static_cast<int32_t>(float_bits(t)) - static_cast<int32_t>(float_bits(kRound));
  const float scale = bits_float(static_cast<uint32_t>(n_int + 127) << 23);  // 2^n
  return x < -87.0f ? 0.0f : p * scale;
}

// A token's unnormalised probability: exp((logit - max) * scale), with
// scale = 1 / temperature (a multiply is far cheaper than a divide, and
// differs from dividing by at most one rounding). PRECONDITION: no NaN,
// logit <= max.
TANDEM_HOST_DEVICE inline float exp_weight(float logit, float max, float scale) {
  return exp_lane((logit - max) * scale);
}

// An unsigned key whose order is the float order (-0 and +0 alike): for
// selecting by logit. PRECONDITION: not NaN.
TANDEM_HOST_DEVICE inline uint32_t logit_order_key(float f) {
  const uint32_t b = f == 0.0f ? 0u : float_bits(f);
  return (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
}

// One token a row's penalties touch.
struct PenaltyEntry {
  int32_t id = 0;
  int32_t repeat = 0;     // 1: apply repetition_penalty (the token is in the prompt or generated)
  float subtract = 0.0f;  // count * frequency_penalty + presence_penalty, 0 when not generated
};

// Fixed-point mass of a weight in [0, 1]: trunc(w * 2^40).
TANDEM_HOST_DEVICE inline uint64_t weight_mass(float w) {
  return static_cast<uint64_t>(static_cast<double>(w) * 0x1p40);
}

// The top-p cut: trunc((top_p - 1e-6) * total), 0 when that is negative.
// (The 1e-6 slack keeps float rounding from adding a token to a set that sits
// exactly on the boundary, as Sampler's does.)
TANDEM_HOST_DEVICE inline uint64_t top_p_target(float top_p, uint64_t total) {
  const double target = (static_cast<double>(top_p) - 1e-6) * static_cast<double>(total);
  return target > 0.0 ? static_cast<uint64_t>(target) : 0;
}

// Step 8's t: (draw * kept) >> 53, exact. draw < 2^53, kept < 2^64.
TANDEM_HOST_DEVICE inline uint64_t draw_target(uint64_t draw, uint64_t kept) {
#ifdef __CUDA_ARCH__
  const uint64_t hi = __umul64hi(draw, kept);
#else
  const uint64_t hi = static_cast<uint64_t>((static_cast<unsigned __int128>(draw) * kept) >> 64);
#endif
  const uint64_t lo = draw * kept;
  return (hi << 11) | (lo >> 53);
}

// Step 1 for one logit.
TANDEM_HOST_DEVICE inline float penalised_logit(float l, const PenaltyEntry& e, float repetition_penalty) {
  if (e.repeat) l = l > 0.0f ? l / repetition_penalty : l * repetition_penalty;
  return l - e.subtract;
}

}  // namespace tandem
