// NcclTensorReduce: the tensor-parallel all-reduce fused with the RMSNorm
// after it, over NCCL's symmetric window (see nccl_tensor_reduce.h).
// CPU twin: the parts summed in rank order onto x, then cpu::rmsnorm (and
// cpu::quantize_row_q8_0's rule for the quantized rows).
#include "backends/cuda/nccl_tensor_reduce.h"

#include <cuda/atomic>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdint>
#include <array>
#include <vector>

#if __has_include(<nccl_device.h>)
#include <nccl_device.h>
#define TANDEM_NCCL_DEVICE_API (NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0))
#else
#define TANDEM_NCCL_DEVICE_API 0
#endif

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/peer_rows.cuh"
#include "backends/cuda/rmsnorm_row.cuh"
#include "common/error.h"

namespace tandem::parallel {
namespace {

constexpr int kMaxRanks = NcclTensorReduce::kMaxRanks;
constexpr int kMaxBlocks = NcclTensorReduce::kMaxBlocks;
constexpr size_t kFlagBytes = sizeof(uint32_t) * kMaxBlocks * kMaxRanks;  // 4 KiB: parts stay 16-byte aligned
constexpr int kMaxChunks = 8;  // float4 pieces a thread: rows of up to 8 * 256 * 4 = 8192 values

// Byte offset of flag (block b, sender s) in a rank's window.
__host__ __device__ constexpr size_t flag_offset(int b, int s) { return sizeof(uint32_t) * (b * kMaxRanks + s); }

// Byte offset of sender s's peer row for `slot` in a rank's window, after
// the flags and both parts: [slot][sender][width] 8-byte words.
size_t peer_row_offset(size_t part_bytes, int64_t width, int slot, int s) {
  return kFlagBytes + 2 * part_bytes + static_cast<size_t>((slot * kMaxRanks + s) * width) * sizeof(uint64_t);
}

struct KernelArgs {
  char* base[kMaxRanks] = {};  // every rank's window, as this rank addresses it (rank order)
  int n_ranks = 1;
  int rank = 0;
  size_t part_offset = 0;         // the slot's part, bytes into every window
  uint32_t* epochs = nullptr;     // [kMaxBlocks]: this rank's barrier epochs
  // A reduction of peer rows (ReduceNormArgs::from_peer_rows): the slot's
  // epoch (advanced by the kernel) and sender 0's row in this rank's window.
  uint32_t* peer_epoch = nullptr;
  size_t peer_offset = 0;
  const volatile int* abort = nullptr;  // host-mapped: nonzero once abort() was called
  int64_t width = 0;
  cuda::ReduceNormArgs a;
};

// Block b's barrier with block b of every other rank (see the header). Every
// thread calls it, after wait_for_predecessor(): the parts written by the
// kernels before this one are then complete, and the release store
// publishes them with the flag. Returns false, in every thread, when the
// wait was given up (abort()): the peers' memory may then be gone with
// their communicators, and must not be read.
__device__ bool meet_peers(const KernelArgs& k) {
  __shared__ bool given_up;
  if (threadIdx.x == 0) given_up = false;
  if (threadIdx.x == 0 && k.n_ranks > 1) {
    const int b = blockIdx.x;
    const uint32_t epoch = k.epochs[b] + 1;
    __threadfence_system();
    for (int r = 0; r < k.n_ranks; ++r) {
      if (r == k.rank) continue;
      ::cuda::atomic_ref<uint32_t, ::cuda::thread_scope_system> flag(
          *reinterpret_cast<uint32_t*>(k.base[r] + flag_offset(b, k.rank)));
      flag.store(epoch, ::cuda::memory_order_release);
    }
    for (int r = 0; r < k.n_ranks; ++r) {
      if (r == k.rank) continue;
      ::cuda::atomic_ref<uint32_t, ::cuda::thread_scope_system> flag(
          *reinterpret_cast<uint32_t*>(k.base[k.rank] + flag_offset(b, r)));
      // Epochs wrap: compare by difference. The abort word is read now and
      // then, so that a wait for a rank that failed can end.
      for (uint32_t spins = 1; !given_up && static_cast<int32_t>(flag.load(::cuda::memory_order_acquire) - epoch) < 0;
           ++spins)
        if (spins % 1024 == 0 && *k.abort != 0) given_up = true;
    }
    k.epochs[b] = epoch;
  }
  __syncthreads();
  return !given_up;
}

// This thread's float4 pieces c = threadIdx.x + kThreads j of a row (those
// past n4 left alone).
template <int C>
__device__ __forceinline__ void load_pieces(const float4* row, int n4, float4 (&out)[C]) {
#pragma unroll
  for (int j = 0; j < C; ++j) {
    const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
    if (c < n4) out[j] = row[c];
  }
}

template <int C>
__device__ __forceinline__ void add_pieces(float4 (&v)[C], const float4 (&p)[C]) {
#pragma unroll
  for (int j = 0; j < C; ++j) {
    v[j].x += p[j].x;
    v[j].y += p[j].y;
    v[j].z += p[j].z;
    v[j].w += p[j].w;
  }
}

// Output row i of a reduction, its sum v in hand: x's row written back
// where no rows are listed, then the norm (and the quants of the first
// n_quantized rows) into out row i.
template <int C>
__device__ __forceinline__ void finish_row(const KernelArgs& k, int64_t i, float4* x, float4 (&v)[C],
                                           const float4 (&g)[C], int n4) {
  if (k.a.rows == nullptr) {
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
      if (c < n4) x[c] = v[j];
    }
  }
  const bool quantize = k.a.q != nullptr && i < k.a.n_quantized;
  cuda::rmsnorm_row::normalize<C>(v, g, n4, k.a.eps, reinterpret_cast<float4*>(k.a.out + i * k.width),
                                  quantize ? reinterpret_cast<char4*>(k.a.q + i * k.width) : nullptr,
                                  quantize ? k.a.d + i * (k.width / 32) : nullptr);
}

// The one-row reduction of peer rows (one block), after the wait: x's row
// plus every rank's part in rank order, this rank's from its part, the
// others' from the words they stored in this rank's window (peer_rows.cuh),
// waited for here; then the norm. A wait given up (abort()) goes on with
// whatever the words hold: they are in this rank's own memory.
template <int C>
__device__ void reduce_peer_row(const KernelArgs& k, const float4 (&g)[C]) {
  const int n4 = static_cast<int>(k.width / 4);
  const uint32_t epoch = *k.peer_epoch + 1;
  const int64_t src = k.a.rows != nullptr ? k.a.rows[0] : 0;
  float4* x = reinterpret_cast<float4*>(k.a.x + src * k.width);
  float4 v[C];
  load_pieces<C>(x, n4, v);
  // This rank's part (the product's row 0, as the words are) is asked for
  // before any wait for the others' words, whatever the rank's place in
  // the sum.
  float4 own[C];
  load_pieces<C>(reinterpret_cast<const float4*>(k.base[k.rank] + k.part_offset), n4, own);
  bool given_up = false;
  for (int r = 0; r < k.n_ranks; ++r) {
    float4 pv[C];
    if (r == k.rank) {
#pragma unroll
      for (int j = 0; j < C; ++j) pv[j] = own[j];
    } else {
      const uint64_t* words = reinterpret_cast<const uint64_t*>(k.base[k.rank] + k.peer_offset) + r * k.width;
      // Every word of the thread's pieces is asked for at once, then checked:
      // one round trip a try, not one a piece.
      uint64_t w[C][4] = {};
      for (uint32_t spins = 1;; ++spins) {
#pragma unroll
        for (int j = 0; j < C; ++j) {
          const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
          if (c < n4) {
            cuda::peer_rows::load_pair(words + 4 * c, w[j][0], w[j][1]);
            cuda::peer_rows::load_pair(words + 4 * c + 2, w[j][2], w[j][3]);
          }
        }
        bool arrived = true;
#pragma unroll
        for (int j = 0; j < C; ++j) {
          const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
#pragma unroll
          for (int e = 0; e < 4; ++e) arrived = arrived && (c >= n4 || cuda::peer_rows::epoch_of(w[j][e]) == epoch);
        }
        if (arrived || given_up) break;
        if (spins % 1024 == 0 && *k.abort != 0) given_up = true;
      }
#pragma unroll
      for (int j = 0; j < C; ++j)
        pv[j] = make_float4(cuda::peer_rows::value(w[j][0]), cuda::peer_rows::value(w[j][1]),
                            cuda::peer_rows::value(w[j][2]), cuda::peer_rows::value(w[j][3]));
    }
    add_pieces<C>(v, pv);
  }
  finish_row<C>(k, 0, x, v, g, n4);
  __syncthreads();  // every thread has read the epoch
  if (threadIdx.x == 0) *k.peer_epoch = epoch;
}

template <int C>
__global__ void __launch_bounds__(cuda::rmsnorm_row::kThreads) reduce_norm_kernel(KernelArgs k) {
  cuda::let_successor_start();
  const int n4 = static_cast<int>(k.width / 4);
  float4 g[C];
  // The norm weights before the wait (fixed at load).
  const float4* w4 = reinterpret_cast<const float4*>(k.a.weight);
#pragma unroll
  for (int j = 0; j < C; ++j) {
    const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
    if (c < n4) g[j] = __ldg(w4 + c);
  }
  cuda::wait_for_predecessor();
  if (k.peer_epoch != nullptr) return reduce_peer_row<C>(k, g);
  if (!meet_peers(k)) return;
  for (int64_t i = blockIdx.x; i < k.a.n_rows; i += gridDim.x) {
    const int64_t src = k.a.rows != nullptr ? k.a.rows[i] : i;
    float4* x = reinterpret_cast<float4*>(k.a.x + src * k.width);
    float4 v[C];
    load_pieces<C>(x, n4, v);
    // x + part of rank 0 + part of rank 1 + ...: the same order, so the same
    // bits, on every rank.
    const size_t row_offset = k.part_offset + static_cast<size_t>(src * k.width) * sizeof(float);
    for (int r = 0; r < k.n_ranks; ++r) {
      float4 pv[C];
      load_pieces<C>(reinterpret_cast<const float4*>(k.base[r] + row_offset), n4, pv);
      add_pieces<C>(v, pv);
    }
    finish_row<C>(k, i, x, v, g, n4);
  }
}

#if TANDEM_NCCL_DEVICE_API
// Where this rank sees every rank's window, and its own rank in the window's
// load/store team (out: n_ranks pointers, then the rank).
__global__ void window_bases_kernel(ncclWindow_t window, int n_ranks, char** bases, int* lsa_rank) {
  for (int r = 0; r < n_ranks; ++r) bases[r] = static_cast<char*>(ncclGetLsaPointer(window, 0, r));
  *lsa_rank = window->lsaRank;
}
#endif

// out[r] = the float at byte `offset` of rank r's window.
__global__ void read_probes_kernel(char* const* bases, int n_ranks, size_t offset, float* out) {
  for (int r = 0; r < n_ranks; ++r) out[r] = *reinterpret_cast<const volatile float*>(bases[r] + offset);
}

}  // namespace

struct NcclTensorReduce::State {
  KernelArgs args;
  int64_t max_tokens = 0;
  size_t part_bytes = 0;
  uint32_t* peer_epochs = nullptr;  // [2]: each slot's last peer-row epoch (in args.epochs' allocation)
  float* parts[2] = {nullptr, nullptr};
  int* abort_host = nullptr;  // cudaHostAlloc'd, mapped: args.abort is its device address
  // create()'s device scratch, freed with the reduction: freeing GPU memory
  // waits for the GPU (and may wait for its peers), which must not happen
  // between create()'s agreements, when a peer may have queued the next.
  void* scratch = nullptr;
};

NcclTensorReduce::NcclTensorReduce() : state_(std::make_unique<State>()) {}

NcclTensorReduce::~NcclTensorReduce() {
  // No throwing here; the window belongs to the communicator.
  if (state_->args.epochs != nullptr) cudaFree(state_->args.epochs);
  if (state_->abort_host != nullptr) cudaFreeHost(state_->abort_host);
  if (state_->scratch != nullptr) cudaFree(state_->scratch);
}

std::unique_ptr<NcclTensorReduce> NcclTensorReduce::create(NcclCommunicator& comm, int64_t max_tokens,
                                                           int64_t width, const std::function<void()>& wait,
                                                           std::string* why) {
  const int n_ranks = comm.world_size();
  auto refuse = [&](std::string reason) -> std::unique_ptr<NcclTensorReduce> {
    if (why != nullptr) *why = std::move(reason);
    return nullptr;
  };
  // Refusals that every rank reaches alike come first, before any collective.
  if (n_ranks < 2) return refuse("one rank has nothing to reduce");
  if (n_ranks > kMaxRanks) return refuse(std::to_string(n_ranks) + " ranks (at most " + std::to_string(kMaxRanks) + ")");
  if (width % 32 != 0 || width / 4 > kMaxChunks * cuda::rmsnorm_row::kThreads)
    return refuse("rows of " + std::to_string(width) + " values (a multiple of 32, at most 8192)");
  if (max_tokens < 1) return refuse("no rows");
#if !TANDEM_NCCL_DEVICE_API
  (void)wait;
  return refuse("built against NCCL " + std::to_string(NCCL_VERSION_CODE) + ", which has no device API (2.28 and later)");
#else
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess || version < NCCL_VERSION(2, 28, 0))
    return refuse("NCCL " + std::to_string(version) + " has no device API (2.28 and later)");
  const size_t part_bytes = static_cast<size_t>(max_tokens * width) * sizeof(float);
  const size_t peer_bytes = peer_row_offset(part_bytes, width, 2, 0) - peer_row_offset(part_bytes, width, 0, 0);
  char* base = reinterpret_cast<char*>(comm.shared_buffer(kFlagBytes + 2 * part_bytes + peer_bytes, wait));
  if (base == nullptr) return refuse(comm.shared_buffer_error());
  const auto window = static_cast<ncclWindow_t>(comm.shared_window());
  std::unique_ptr<NcclTensorReduce> out(new NcclTensorReduce());
  State& s = *out->state_;
  s.max_tokens = max_tokens;
  s.part_bytes = part_bytes;
  s.parts[0] = reinterpret_cast<float*>(base + kFlagBytes);
  s.parts[1] = reinterpret_cast<float*>(base + kFlagBytes + part_bytes);
  s.args.n_ranks = n_ranks;
  s.args.rank = comm.rank();
  s.args.width = width;
  const auto stream = static_cast<cudaStream_t>(comm.stream());
  TANDEM_CUDA_CHECK(cudaMalloc(&s.args.epochs, sizeof(uint32_t) * (kMaxBlocks + 2)));
  s.peer_epochs = s.args.epochs + kMaxBlocks;
  // [bases: kMaxRanks pointers][lsa rank: int, padded][probes: kMaxRanks floats]
  const size_t probes_at = sizeof(char*) * kMaxRanks + sizeof(char*);
  TANDEM_CUDA_CHECK(cudaMalloc(&s.scratch, probes_at + sizeof(float) * kMaxRanks));
  char** bases_dev = static_cast<char**>(s.scratch);
  int* lsa_rank_dev = reinterpret_cast<int*>(bases_dev + kMaxRanks);
  float* probes_dev = reinterpret_cast<float*>(static_cast<char*>(s.scratch) + probes_at);
  TANDEM_CUDA_CHECK(cudaHostAlloc(&s.abort_host, sizeof(int), cudaHostAllocMapped));
  *s.abort_host = 0;
  int* abort_device = nullptr;
  TANDEM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&abort_device), s.abort_host, 0));
  s.args.abort = abort_device;
  // Zeroed flags, peer rows and epochs, and a probe in part 0: this rank's
  // number + 1.
  // NCCL sets up the window's device description on its own streams: the
  // whole device is waited for before it is read.
  const float probe = static_cast<float>(comm.rank() + 1);
  cudaError_t e = cudaMemsetAsync(base, 0, kFlagBytes, stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(base + peer_row_offset(part_bytes, width, 0, 0), 0, peer_bytes, stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(s.args.epochs, 0, sizeof(uint32_t) * (kMaxBlocks + 2), stream);
  if (e == cudaSuccess) e = cudaMemcpyAsync(s.parts[0], &probe, sizeof probe, cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  TANDEM_CUDA_CHECK(e);
  // Where this rank sees every rank's window (NCCL's own mapping of each,
  // this rank's included: an alias of `base`), and its rank in the window's
  // load/store team, which must be its rank in the clique.
  std::array<char*, kMaxRanks> bases{};
  int lsa_rank = -1;
  if (window != nullptr) {
    window_bases_kernel<<<1, 1, 0, stream>>>(window, n_ranks, bases_dev, lsa_rank_dev);
    e = cudaGetLastError();
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(bases.data(), bases_dev, sizeof(char*) * kMaxRanks, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(&lsa_rank, lsa_rank_dev, sizeof(int), cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    TANDEM_CUDA_CHECK(e);
  }
  const bool mapped = window != nullptr && lsa_rank == comm.rank();
  // The agreement is also the point after which every rank's flags are
  // zeroed and its probe written.
  if (!comm.agree(mapped, wait))
    return refuse(window == nullptr ? comm.shared_window_error()
                  : mapped          ? "another rank has no symmetric window, or its window another rank order"
                                    : "this rank is number " + std::to_string(lsa_rank) +
                                          " in its window's load/store team, " + std::to_string(comm.rank()) +
                                          " in the clique");
  // Every rank's probe, read through the mapping.
  std::array<float, kMaxRanks> probes{};
  {
    e = cudaMemcpyAsync(bases_dev, bases.data(), sizeof(char*) * kMaxRanks, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess) {
      read_probes_kernel<<<1, 1, 0, stream>>>(bases_dev, n_ranks, kFlagBytes, probes_dev);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(probes.data(), probes_dev, sizeof(float) * kMaxRanks, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    TANDEM_CUDA_CHECK(e);
  }
  int unreadable = -1;
  for (int r = n_ranks - 1; r >= 0; --r)
    if (probes[static_cast<size_t>(r)] != static_cast<float>(r + 1)) unreadable = r;
  if (!comm.agree(unreadable < 0, wait))
    return refuse(unreadable < 0 ? "another rank does not see every rank's window"
                                 : "this rank does not see rank " + std::to_string(unreadable) + "'s window");
  std::copy(bases.begin(), bases.end(), s.args.base);
  return out;
#endif
}

int64_t NcclTensorReduce::max_tokens() const { return state_->max_tokens; }
int64_t NcclTensorReduce::width() const { return state_->args.width; }
float* NcclTensorReduce::part(int slot) const { return state_->parts[slot & 1]; }

cuda::PeerRows NcclTensorReduce::peer_rows(int slot) const {
  const State& s = *state_;
  cuda::PeerRows p;
  for (int r = 0; r < s.args.n_ranks; ++r) {
    if (r == s.args.rank) continue;
    p.row[p.n_peers++] =
        reinterpret_cast<uint64_t*>(s.args.base[r] + peer_row_offset(s.part_bytes, s.args.width, slot & 1, s.args.rank));
  }
  p.epoch = s.peer_epochs + (slot & 1);
  return p;
}

void NcclTensorReduce::abort() {
  if (state_->abort_host != nullptr) *reinterpret_cast<volatile int*>(state_->abort_host) = 1;
}

void NcclTensorReduce::reduce_norm(int slot, const cuda::ReduceNormArgs& a, cudaStream_t stream) {
  State& s = *state_;
  // At least one row: a reduction of none would skip the barrier, on which
  // the slots' alternation relies. The kernel takes float4 pieces of x,
  // out and the weight, and char4 pieces of q.
  check(a.n_rows >= 1 && a.n_rows <= s.max_tokens && (a.q == nullptr || (a.d != nullptr && a.n_quantized <= a.n_rows)),
        "internal: a tensor reduction of " + std::to_string(a.n_rows) + " rows (1 to " +
            std::to_string(s.max_tokens) + ")");
  const auto aligned = [](const void* p, uintptr_t to) { return reinterpret_cast<uintptr_t>(p) % to == 0; };
  check(aligned(a.x, 16) && aligned(a.out, 16) && aligned(a.weight, 16) && aligned(a.q, 4),
        "internal: a tensor reduction's x, out and weight are 16-byte aligned, q 4-byte");
  check(!a.from_peer_rows || a.n_rows == 1, "internal: a reduction of peer rows takes one row");
  KernelArgs k = s.args;
  k.a = a;
  if (k.a.q == nullptr) k.a.n_quantized = 0;
  k.part_offset = kFlagBytes + static_cast<size_t>(slot & 1) * s.part_bytes;
  if (a.from_peer_rows) {
    k.peer_epoch = s.peer_epochs + (slot & 1);
    k.peer_offset = peer_row_offset(s.part_bytes, s.args.width, slot & 1, 0);
  }
  // Every rank launches the same grid: block b meets block b.
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(a.n_rows, kMaxBlocks));
  const int64_t chunks = (s.args.width / 4 + cuda::rmsnorm_row::kThreads - 1) / cuda::rmsnorm_row::kThreads;
  if (chunks <= 2)
    cuda::launch(reduce_norm_kernel<2>, grid, cuda::rmsnorm_row::kThreads, stream, k);
  else if (chunks <= 4)
    cuda::launch(reduce_norm_kernel<4>, grid, cuda::rmsnorm_row::kThreads, stream, k);
  else
    cuda::launch(reduce_norm_kernel<8>, grid, cuda::rmsnorm_row::kThreads, stream, k);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::parallel
