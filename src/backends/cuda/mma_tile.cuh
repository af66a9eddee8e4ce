// Device helpers of the tensor-core attention kernels (prefill_attention.cu,
// grouped_decode_attention.cu): f16 packing, cp.async copies into shared
// memory, the paged cache's rows and their staging in tiles, ldmatrix
// fragment loads and the m16n8k16 mma.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major): reg0 = row g, cols 2t..2t+1; reg1 = row g+8,
//     cols 2t..2t+1; reg2 = row g, cols 2t+8..; reg3 = row g+8, cols 2t+8..
//   B (16 x 8, "col"): reg0 = rows (k) 2t..2t+1 of col (n) g; reg1 = rows 2t+8..
//   C (16 x 8, f32): c0, c1 = row g, cols 2t, 2t+1; c2, c3 = row g+8.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/kv_cache_element.cuh"

namespace tandem::cuda::mma_tile {

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from global to shared memory, asynchronously; zeros where
// `valid` is false (src is then not read).
__device__ __forceinline__ void copy_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void copy_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void copy_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Offset in elements of position p's key (or value) row for one KV head in
// a paged cache of rows of kv_dim values, the head's values starting at
// head_offset; -1 at or past kv_len. table: the sequence's block table.
__device__ __forceinline__ int64_t cache_row(const int32_t* table, int block_size, int kv_dim, int head_offset, int p,
                                             int kv_len) {
  if (p >= kv_len) return -1;
  const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
  return slot * kv_dim + head_offset;
}

// Queues the copy of one tile of kTile cache rows (rows[j]: cache_row of
// its position j) into shared memory: keys to k_dst, values to v_dst
// (shared addresses, rows of LD halves); a row of -1 becomes zeros. Piece c
// of the tile is 16-byte piece c % (HD / 8) of row c / (HD / 8), so a warp
// reads whole rows. Commits the copies as one group.
template <int HD, int LD, int kTile, int kThreads>
__device__ __forceinline__ void copy_cache_tile(uint32_t k_dst, uint32_t v_dst, const int64_t* rows,
                                                const __half* k_cache, const __half* v_cache) {
  constexpr int kPieces = HD / 8;
  constexpr int kLoads = kTile * kPieces / kThreads;  // pieces a thread copies, of K and of V
  static_assert(kTile * kPieces % kThreads == 0, "a tile's pieces must divide among the threads");
#pragma unroll
  for (int u = 0; u < kLoads; ++u) {
    const int c = static_cast<int>(threadIdx.x) + u * kThreads, j = c / kPieces, piece = c % kPieces;
    const int64_t row = rows[j];
    const int64_t off = (row < 0 ? 0 : row) + piece * 8;
    const uint32_t d = static_cast<uint32_t>((j * LD + piece * 8) * sizeof(__half));
    copy_16(k_dst + d, k_cache + off, row >= 0);
    copy_16(v_dst + d, v_cache + off, row >= 0);
  }
  copy_commit();
}

// The same for an E4M3 cache (KvCacheType::Fp8E4M3): rows of HD bytes,
// copied densely (row j at j * HD) into k_dst and v_dst; widen_tile then
// turns them into the f16 layout above. A row of -1 becomes zeros.
template <int HD, int kTile, int kThreads>
__device__ __forceinline__ void copy_cache_tile_fp8(uint32_t k_dst, uint32_t v_dst, const int64_t* rows,
                                                    const uint8_t* k_cache, const uint8_t* v_cache) {
  constexpr int kPieces = HD / 16;
  constexpr int kTotal = kTile * kPieces;
#pragma unroll
  for (int u = 0; u < (kTotal + kThreads - 1) / kThreads; ++u) {
    const int c = static_cast<int>(threadIdx.x) + u * kThreads, j = c / kPieces, piece = c % kPieces;
    if (kTotal % kThreads != 0 && c >= kTotal) break;
    const int64_t row = rows[j];
    const int64_t off = (row < 0 ? 0 : row) + piece * 16;
    const uint32_t d = static_cast<uint32_t>(j * HD + piece * 16);
    copy_16(k_dst + d, k_cache + off, row >= 0);
    copy_16(v_dst + d, v_cache + off, row >= 0);
  }
  copy_commit();
}

// Widens a tile that copy_cache_tile_fp8 staged (k_src, v_src: rows of HD
// E4M3 bytes) into k_dst and v_dst, rows of LD halves as copy_cache_tile
// lays them out; exact. Every thread of the block calls it; the caller
// synchronizes before (the copy landed) and after (the tile is read).
template <int HD, int LD, int kTile, int kThreads>
__device__ __forceinline__ void widen_tile(const uint8_t* k_src, const uint8_t* v_src, __half* k_dst, __half* v_dst) {
  constexpr int kPieces = HD / 16;
  constexpr int kTotal = kTile * kPieces;
#pragma unroll
  for (int u = 0; u < (kTotal + kThreads - 1) / kThreads; ++u) {
    const int c = static_cast<int>(threadIdx.x) + u * kThreads, j = c / kPieces, piece = c % kPieces;
    if (kTotal % kThreads != 0 && c >= kTotal) break;
    const uint4 k8 = *reinterpret_cast<const uint4*>(k_src + j * HD + piece * 16);
    const uint4 v8 = *reinterpret_cast<const uint4*>(v_src + j * HD + piece * 16);
    uint4* k16 = reinterpret_cast<uint4*>(k_dst + j * LD + piece * 16);
    uint4* v16 = reinterpret_cast<uint4*>(v_dst + j * LD + piece * 16);
    kv_cache_element::widen16(k8, k16[0], k16[1]);
    kv_cache_element::widen16(v8, v16[0], v16[1]);
  }
}

// Four 8 x 8 f16 matrices from shared memory; lane l gives the address of
// row l % 8 of matrix l / 8, and r[i] is this lane's fragment of matrix i
// (row g, cols 2t..2t+1; with .trans the transpose's).
__device__ __forceinline__ void load_matrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void load_matrix_x2(uint32_t (&r)[2], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
}
__device__ __forceinline__ void load_matrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a b for one m16n8k16 tile (f16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // callers refuse GPUs before sm_80
#endif
}

}  // namespace tandem::cuda::mma_tile
