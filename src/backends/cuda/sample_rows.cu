// Sampling on the GPU: each row's token by the row sampling rule
// (engine/row_sampling.h), so that a sampled step returns token ids instead
// of its logits rows. One block a row. The rule's integer masses make every
// sum exact, so the radix selections here and the sorts of the CPU
// reference (sample_row_reference) pick the same token.
//
// This file builds without --use_fast_math and with --fmad=false (see
// CMakeLists.txt): the exponentials must be the host's bits.
#include <climits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;  // radix digits of 8 bits
constexpr unsigned kFull = 0xffffffffu;

struct Cut {
  int digit;       // -1: none
  uint64_t above;  // the sum of the histogram over the digits above it
};

// A radix histogram of 4 warps' tokens (kHistograms of them): the atomics
// of a pass, which crowd into a few digits, contend within 4 warps only, and
// the 24 KiB fit the shared memory of every GPU without opting in. The
// mass is a 64-bit sum kept as two 32-bit words (hi takes lo's carries).
struct PartHistogram {
  uint32_t count[kBins];
  uint32_t lo[kBins];
  uint32_t hi[kBins];
};
constexpr int kWarpsPerHistogram = 4;
constexpr int kHistograms = kWarps / kWarpsPerHistogram;

struct SampleShared {
  uint64_t mass[kBins];   // the block's histogram: fixed-point mass per digit
  uint32_t count[kBins];  // the block's histogram: tokens per digit
  uint64_t warp_u64[kWarps];
  float warp_f32[kWarps];
  int warp_int[kWarps];
  Cut cut;
};

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x % 32); }
__device__ __forceinline__ int warp_id() { return static_cast<int>(threadIdx.x / 32); }

// Reductions over the block whose results do not depend on timing (integer
// sums, max, min). Every thread gets the result.
__device__ float block_max(float v, SampleShared& sh) {
  for (int off = 16; off > 0; off /= 2) {
    const float o = __shfl_xor_sync(kFull, v, off);
    v = o > v ? o : v;
  }
  if (lane_id() == 0) sh.warp_f32[warp_id()] = v;
  __syncthreads();
  float best = sh.warp_f32[0];
  for (int w = 1; w < kWarps; ++w) best = sh.warp_f32[w] > best ? sh.warp_f32[w] : best;
  __syncthreads();
  return best;
}

__device__ int block_min(int v, SampleShared& sh) {
  for (int off = 16; off > 0; off /= 2) v = min(v, __shfl_xor_sync(kFull, v, off));
  if (lane_id() == 0) sh.warp_int[warp_id()] = v;
  __syncthreads();
  int best = sh.warp_int[0];
  for (int w = 1; w < kWarps; ++w) best = min(best, sh.warp_int[w]);
  __syncthreads();
  return best;
}

__device__ uint64_t warp_sum(uint64_t v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFull, v, off);
  return v;
}

// v: one value a warp (the same in all its lanes). Returns the sum over the
// warps before this one, and in *total the sum over all.
__device__ uint64_t warps_exclusive_sum(uint64_t v, SampleShared& sh, uint64_t* total) {
  if (lane_id() == 0) sh.warp_u64[warp_id()] = v;
  __syncthreads();
  uint64_t before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    before += w < warp_id() ? sh.warp_u64[w] : 0;
    all += sh.warp_u64[w];
  }
  __syncthreads();
  *total = all;
  return before;
}

// Warp 0: the highest digit d with count[d] > 0 and
//   acc + (sum of value over digits >= d) >= target,
// into sh.cut (digit -1 when there is none). Lane l owns digits [8l, 8l + 8).
template <typename T>
__device__ void find_cut(const T* value, const uint32_t* count, uint64_t acc, uint64_t target, SampleShared& sh) {
  const int lane = lane_id();
  uint64_t local[8];
  uint64_t sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    local[j] = value[lane * 8 + j];
    sum += local[j];
  }
  uint64_t suffix = sum;  // over lanes >= this one
  for (int off = 1; off < 32; off *= 2) {
    const uint64_t y = __shfl_down_sync(kFull, suffix, off);
    if (lane + off < 32) suffix += y;
  }
  uint64_t running = suffix - sum;  // over the digits above this lane's
  int found = -1;
  uint64_t found_above = 0;
#pragma unroll
  for (int j = 7; j >= 0; --j) {
    const uint64_t before = running;
    running += local[j];
    if (found < 0 && count[lane * 8 + j] > 0 && acc + running >= target) {
      found = lane * 8 + j;
      found_above = before;
    }
  }
  const unsigned ballot = __ballot_sync(kFull, found >= 0);
  if (ballot == 0) {
    if (lane == 0) sh.cut = {-1, 0};
  } else if (lane == 31 - __clz(ballot)) {
    sh.cut = {found, found_above};
  }
}

// One radix pass: sh.count and (with_mass) sh.mass over digit (key >> shift)
// & 0xFF of the tokens whose key matches prefix under mask. key_of(i)
// returns false for tokens outside the selection.
template <bool with_mass, typename KeyOf>
__device__ void radix_histogram(int64_t n, uint32_t prefix, uint32_t mask, int shift, PartHistogram* hist,
                                SampleShared& sh, const KeyOf& key_of) {
  PartHistogram& h = hist[warp_id() / kWarpsPerHistogram];
  for (int b = threadIdx.x; b < kHistograms * kBins; b += kThreads) {
    hist[b / kBins].count[b % kBins] = 0;
    if (with_mass) hist[b / kBins].lo[b % kBins] = hist[b / kBins].hi[b % kBins] = 0;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    uint32_t key = 0;
    uint64_t mass = 0;
    if (!key_of(i, &key, &mass) || (key & mask) != prefix) continue;
    const uint32_t d = (key >> shift) & 0xFFu;
    atomicAdd(&h.count[d], 1u);
    if (with_mass) {
      const uint32_t lo = static_cast<uint32_t>(mass), hi = static_cast<uint32_t>(mass >> 32);
      const uint32_t old = atomicAdd(&h.lo[d], lo);
      const uint32_t carry = old + lo < old ? 1u : 0u;  // this add wrapped lo
      if (hi + carry != 0) atomicAdd(&h.hi[d], hi + carry);
    }
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += kThreads) {
    uint32_t count = 0;
    uint64_t mass = 0;
    for (int k = 0; k < kHistograms; ++k) {
      count += hist[k].count[b];
      if (with_mass) mass += (static_cast<uint64_t>(hist[k].hi[b]) << 32) + hist[k].lo[b];
    }
    sh.count[b] = count;
    if (with_mass) sh.mass[b] = mass;
  }
  __syncthreads();
}

// Step 5: the top_k-th best logit's order key, and how many tokens holding
// it belong to the top k (the lowest ids among them).
__device__ void select_top_k(const float* row, int64_t n, uint32_t top_k, PartHistogram* hist, SampleShared& sh,
                             uint32_t* key, uint32_t* ties) {
  uint32_t prefix = 0, mask = 0, remaining = top_k;
  const auto key_of = [row](int64_t i, uint32_t* k, uint64_t*) {
    *k = logit_order_key(row[i]);
    return true;
  };
  for (int shift = 24; shift >= 0; shift -= 8) {
    radix_histogram<false>(n, prefix, mask, shift, hist, sh, key_of);
    if (threadIdx.x < 32) find_cut(sh.count, sh.count, 0, remaining, sh);
    __syncthreads();
    // remaining <= tokens in the group, so the cut always exists.
    prefix |= static_cast<uint32_t>(sh.cut.digit) << shift;
    mask |= 0xFFu << shift;
    remaining -= static_cast<uint32_t>(sh.cut.above);
    __syncthreads();
  }
  *key = prefix;
  *ties = remaining;
}

// Step 7's cut: the bits of the weight at which the best-first mass reaches
// target, and how many tokens of that weight are kept (the lowest ids).
// Returns false when even all the mass falls short (not possible with exact
// sums; then everything is kept).
__device__ bool select_top_p(const float* row, int64_t n, uint64_t target, PartHistogram* hist, SampleShared& sh,
                             uint32_t* key, uint64_t* ties) {
  uint32_t prefix = 0, mask = 0;
  uint64_t acc = 0;  // mass of the tokens above the current group
  const auto key_of = [row](int64_t i, uint32_t* k, uint64_t* m) {
    const float w = row[i];
    *k = float_bits(w);  // weights are positive: bit order is value order
    *m = weight_mass(w);
    return w > 0.0f;
  };
  for (int shift = 24; shift >= 0; shift -= 8) {
    radix_histogram<true>(n, prefix, mask, shift, hist, sh, key_of);
    if (threadIdx.x < 32) find_cut(sh.mass, sh.count, acc, target, sh);
    __syncthreads();
    const Cut cut = sh.cut;
    __syncthreads();
    if (cut.digit < 0) return false;
    prefix |= static_cast<uint32_t>(cut.digit) << shift;
    mask |= 0xFFu << shift;
    acc += cut.above;
  }
  *key = prefix;
  const uint64_t each = weight_mass(bits_float(prefix));
  *ties = (acc >= target || each == 0) ? 1 : (target - acc + each - 1) / each;
  return true;
}

__global__ void __launch_bounds__(kThreads)
    sample_rows_kernel(float* __restrict__ logits, int64_t n, int64_t ld, const SampleRowArgs* __restrict__ args,
                       const PenaltyEntry* __restrict__ penalties, int32_t* __restrict__ out) {
  __shared__ SampleShared sh;
  __shared__ PartHistogram hist[kHistograms];
  const SampleRowArgs a = args[blockIdx.x];
  float* row = logits + a.row * ld;
  const int tid = threadIdx.x, lane = lane_id();
  const unsigned lanes_below = (1u << lane) - 1;
  // The walks in id order: warp w takes [seg_begin, seg_end), 32 tokens at
  // a time, lane l the l-th of each 32.
  const int64_t seg = ((n + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int64_t seg_begin = min(n, warp_id() * seg), seg_end = min(n, seg_begin + seg);

  // 1. penalties (distinct ids: no two threads touch one logit)
  for (int e = a.penalty_begin + tid; e < a.penalty_end; e += kThreads) {
    const PenaltyEntry p = penalties[e];
    row[p.id] = penalised_logit(row[p.id], p, a.repetition_penalty);
  }
  __syncthreads();
  // 2. NaN -> -inf, and 3. the max (0 for a row with +inf, which becomes
  // 0 for +inf and -inf elsewhere)
  float m = -INFINITY;
  for (int64_t i = tid; i < n; i += kThreads) {
    const float l = row[i];
    if (l != l) row[i] = -INFINITY;
    m = l > m ? l : m;  // false for NaN
  }
  float max = block_max(m, sh);
  if (max == INFINITY) {
    for (int64_t i = tid; i < n; i += kThreads) row[i] = row[i] == INFINITY ? 0.0f : -INFINITY;
    max = 0.0f;
    __syncthreads();
  }
  if (!(max > -INFINITY)) {
    if (tid == 0) out[a.row] = -1;
    return;
  }
  // 4. greedy
  if (a.greedy) {
    int first = INT_MAX;
    for (int64_t i = tid; i < n; i += kThreads) {
      if (row[i] == max) {
        first = static_cast<int>(i);
        break;
      }
    }
    first = block_min(first, sh);
    if (tid == 0) out[a.row] = first;
    return;
  }
  // 5. top-k
  const bool use_top_k = a.top_k > 0 && a.top_k < n;
  uint32_t k_key = 0, k_ties = 0;
  uint64_t unused = 0;
  if (use_top_k) select_top_k(row, n, static_cast<uint32_t>(a.top_k), hist, sh, &k_key, &k_ties);
  // 6. weights, in place; top-k ties go to the lowest ids.
  uint64_t rank = 0;  // top-k ties before this warp's next 32 tokens
  if (use_top_k) {
    uint64_t warp_ties = 0;
    for (int64_t base = seg_begin; base < seg_end; base += 32) {
      const int64_t i = base + lane;
      warp_ties += __popc(__ballot_sync(kFull, i < seg_end && logit_order_key(row[i]) == k_key));
    }
    rank = warps_exclusive_sum(warp_ties, sh, &unused);
  }
  uint64_t mass = 0;
  for (int64_t base = seg_begin; base < seg_end; base += 32) {
    const int64_t i = base + lane;
    const bool valid = i < seg_end;
    const float l = valid ? row[i] : -INFINITY;
    bool member = true;
    if (use_top_k) {
      const uint32_t k = logit_order_key(l);
      const unsigned ties = __ballot_sync(kFull, valid && k == k_key);
      member = k > k_key || (k == k_key && rank + __popc(ties & lanes_below) < k_ties);
      rank += __popc(ties);
    }
    if (!valid) continue;
    float w = member ? exp_weight(l, max, a.scale) : 0.0f;
    if (!(w >= a.min_p)) w = 0.0f;
    row[i] = w;
    mass += weight_mass(w);
  }
  uint64_t warp_mass = warp_sum(mass);  // what this warp's tokens keep, for the draw
  uint64_t total = 0;
  warps_exclusive_sum(warp_mass, sh, &total);
  // 7. top-p
  if (a.top_p < 1.0f) {
    uint32_t p_key = 0;
    uint64_t p_ties = 0;
    if (select_top_p(row, n, top_p_target(a.top_p, total), hist, sh, &p_key, &p_ties)) {
      uint64_t warp_ties = 0;
      for (int64_t base = seg_begin; base < seg_end; base += 32) {
        const int64_t i = base + lane;
        warp_ties += __popc(__ballot_sync(kFull, i < seg_end && row[i] > 0.0f && float_bits(row[i]) == p_key));
      }
      uint64_t tie_rank = warps_exclusive_sum(warp_ties, sh, &unused);
      uint64_t kept_mass = 0;
      for (int64_t base = seg_begin; base < seg_end; base += 32) {
        const int64_t i = base + lane;
        const bool valid = i < seg_end;
        const float w = valid ? row[i] : 0.0f;
        const uint32_t k = float_bits(w);
        const unsigned ties = __ballot_sync(kFull, w > 0.0f && k == p_key);
        const bool drop = w > 0.0f && (k < p_key || (k == p_key && tie_rank + __popc(ties & lanes_below) >= p_ties));
        tie_rank += __popc(ties);
        if (drop) row[i] = 0.0f;
        kept_mass += drop ? 0 : weight_mass(w);
      }
      warp_mass = warp_sum(kept_mass);
    }
  }
  // 8. draw: the warp whose tokens hold t walks them 32 at a time.
  uint64_t kept = 0;
  uint64_t running = warps_exclusive_sum(warp_mass, sh, &kept);
  const uint64_t t = draw_target(a.draw, kept);
  if (running <= t && t < running + warp_mass) {  // the same in every lane of the warp
    for (int64_t base = seg_begin; base < seg_end; base += 32) {
      const int64_t i = base + lane;
      uint64_t inclusive = i < seg_end ? weight_mass(row[i]) : 0;
      for (int off = 1; off < 32; off *= 2) {
        const uint64_t y = __shfl_up_sync(kFull, inclusive, off);
        if (lane >= off) inclusive += y;
      }
      const unsigned past = __ballot_sync(kFull, running + inclusive > t);
      if (past != 0) {
        if (lane == __ffs(past) - 1) out[a.row] = static_cast<int32_t>(i);
        break;
      }
      running += __shfl_sync(kFull, inclusive, 31);
    }
  }
}

}  // namespace

void sample_rows(float* logits, int64_t n_cols, int64_t ld, const SampleRowArgs* args, int n_rows,
                 const PenaltyEntry* penalties, int32_t* out, cudaStream_t stream) {
  // Masses are at most 2^40 a token: 2^23 tokens keep their sum in 64 bits.
  check(n_cols > 0 && n_cols <= (int64_t{1} << 23) && ld >= n_cols,
        "internal: sample_rows over an empty row or one of more than 2^23 tokens");
  if (n_rows == 0) return;
  sample_rows_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(logits, n_cols, ld, args, penalties,
                                                                              out);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
