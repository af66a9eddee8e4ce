// NcclTensorReduce: the tensor-parallel all-reduce fused with the RMSNorm
// after it, over NCCL's symmetric window (see nccl_tensor_reduce.h).
// CPU twin: the parts summed in rank order onto x, then cpu::rmsnorm (and
// cpu::quantize_row_q8_0's rule for the quantized rows).
#include "backends/cuda/nccl_tensor_reduce.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
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
#include "backends/cuda/rmsnorm_row.cuh"
#include "common/error.h"

namespace tandem::parallel {
namespace {

constexpr int kMaxRanks = NcclTensorReduce::kMaxRanks;
constexpr int kMaxChunks = 8;  // float4 pieces a thread: rows of up to 8 * 256 * 4 = 8192 values

// A value as the kernel sends it: its bits and the reduction's epoch, stored
// together by one 8-byte store, so that a receiver that sees the epoch sees
// the value (no separate flag, no barrier).
__device__ __forceinline__ void send_word(uint2* to, float value, uint32_t epoch) {
  asm volatile("st.volatile.global.v2.u32 [%0], {%1, %2};" ::"l"(to), "r"(__float_as_uint(value)), "r"(epoch)
               : "memory");
}

__device__ __forceinline__ void clear_word(const uint2* word) {
  asm volatile("st.volatile.global.u32 [%0], 0;" ::"l"(reinterpret_cast<const char*>(word) + 4) : "memory");
}

__device__ __forceinline__ uint2 load_word(const uint2* from) {
  uint2 w;
  asm volatile("ld.volatile.global.v2.u32 {%0, %1}, [%2];" : "=r"(w.x), "=r"(w.y) : "l"(from) : "memory");
  return w;
}

struct KernelArgs {
  char* base[kMaxRanks] = {};  // every rank's window, as this rank addresses it (rank order)
  int n_ranks = 1;
  int rank = 0;
  const float* part = nullptr;  // [max_tokens, width]: this rank's part of the slot (its own address)
  size_t inbox_offset = 0;      // the slot's inbox, bytes into every window
  const uint2* inbox = nullptr;  // the same in this rank's window (its own address)
  int64_t max_tokens = 0;
  uint32_t* counters = nullptr;  // [2]: the last reduction's epoch, and blocks done with this one
  const volatile int* abort = nullptr;  // host-mapped: nonzero once abort() was called
  int64_t width = 0;
  cuda::ReduceNormArgs a;
};

// Inbox word of (sender s, row t, column c) in a slot's inbox:
// [n_ranks, max_tokens, width] words of 8 bytes.
__device__ __forceinline__ size_t word_index(const KernelArgs& k, int s, int64_t t, int64_t c) {
  return (static_cast<size_t>(s) * k.max_tokens + t) * k.width + c;
}

// C: float4 pieces of a row a thread.
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
  // After the wait this rank's part is complete, and so is the reduction
  // before this one (its counter update included).
  cuda::wait_for_predecessor();
  const uint32_t epoch = k.counters[0] + 1 != 0 ? k.counters[0] + 1 : 1;  // never 0 (a consumed word)
  // Send: this rank's rows of the part to every other rank's inbox.
  for (int64_t i = blockIdx.x; i < k.a.n_rows; i += gridDim.x) {
    const int64_t src = k.a.rows != nullptr ? k.a.rows[i] : i;
    const float4* own = reinterpret_cast<const float4*>(k.part + src * k.width);
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
      if (c >= n4) continue;
      const float4 v = own[c];
      for (int r = 0; r < k.n_ranks; ++r) {
        if (r == k.rank) continue;
        uint2* to = reinterpret_cast<uint2*>(k.base[r] + k.inbox_offset) + word_index(k, k.rank, src, 4 * c);
        send_word(to, v.x, epoch);
        send_word(to + 1, v.y, epoch);
        send_word(to + 2, v.z, epoch);
        send_word(to + 3, v.w, epoch);
      }
    }
  }
  // Receive: x + part of rank 0 + part of rank 1 + ... (the same order, so
  // the same bits, on every rank), each peer's words awaited in this rank's
  // own inbox. The abort word is read now and then, so that a wait for a
  // rank that failed can end.
  bool aborted = false;
  for (int64_t i = blockIdx.x; i < k.a.n_rows; i += gridDim.x) {
    const int64_t src = k.a.rows != nullptr ? k.a.rows[i] : i;
    float4* x = reinterpret_cast<float4*>(k.a.x + src * k.width);
    const float4* own = reinterpret_cast<const float4*>(k.part + src * k.width);
    float4 v[C];
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
      if (c < n4) v[j] = x[c];
    }
    for (int r = 0; r < k.n_ranks; ++r) {
#pragma unroll
      for (int j = 0; j < C; ++j) {
        const int c = threadIdx.x + cuda::rmsnorm_row::kThreads * j;
        if (c >= n4) continue;
        float4 p;
        if (r == k.rank) {
          p = own[c];
        } else {
          const uint2* from = k.inbox + word_index(k, r, src, 4 * c);
          float e[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            uint2 w = load_word(from + q);
            for (uint32_t spins = 1; w.y != epoch && !aborted; ++spins) {
              if (spins % 1024 == 0 && *k.abort != 0) aborted = true;
              w = load_word(from + q);
            }
            e[q] = __uint_as_float(w.x);
            // Consumed: epoch 0, which no reduction uses, so that a word
            // left from long ago never passes for a new one.
            clear_word(from + q);
          }
          p = make_float4(e[0], e[1], e[2], e[3]);
        }
        v[j].x += p.x;
        v[j].y += p.y;
        v[j].z += p.z;
        v[j].w += p.w;
      }
    }
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
  // The last block to finish records the epoch for the next reduction.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(&k.counters[1], 1u) == gridDim.x - 1) {
      k.counters[1] = 0;
      k.counters[0] = epoch;
    }
  }
}

void launch_reduce(int64_t chunks, dim3 grid, dim3 threads, cudaStream_t stream, const KernelArgs& k) {
  if (chunks <= 2)
    cuda::launch(reduce_norm_kernel<2>, grid, threads, stream, k);
  else if (chunks <= 4)
    cuda::launch(reduce_norm_kernel<4>, grid, threads, stream, k);
  else
    cuda::launch(reduce_norm_kernel<8>, grid, threads, stream, k);
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
  float* parts[2] = {nullptr, nullptr};
  size_t inbox_offset[2] = {0, 0};
  const uint2* inbox[2] = {nullptr, nullptr};
  int* abort_host = nullptr;  // cudaHostAlloc'd, mapped: args.abort is its device address
};

NcclTensorReduce::NcclTensorReduce() : state_(std::make_unique<State>()) {}

NcclTensorReduce::~NcclTensorReduce() {
  // No throwing here; the window belongs to the communicator.
  if (state_->args.counters != nullptr) cudaFree(state_->args.counters);
  if (state_->abort_host != nullptr) cudaFreeHost(state_->abort_host);
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
  // Per slot: this rank's part (f32) and its inbox (a word of 8 bytes for
  // every rank's value).
  const size_t inbox_bytes = static_cast<size_t>(n_ranks) * static_cast<size_t>(max_tokens * width) * sizeof(uint2);
  char* base = reinterpret_cast<char*>(comm.shared_buffer(2 * (part_bytes + inbox_bytes), wait));
  if (base == nullptr) return refuse(comm.shared_buffer_error());
  const auto window = static_cast<ncclWindow_t>(comm.shared_window());
  std::unique_ptr<NcclTensorReduce> out(new NcclTensorReduce());
  State& s = *out->state_;
  s.max_tokens = max_tokens;
  s.parts[0] = reinterpret_cast<float*>(base);
  s.parts[1] = reinterpret_cast<float*>(base + part_bytes);
  s.inbox_offset[0] = 2 * part_bytes;
  s.inbox_offset[1] = 2 * part_bytes + inbox_bytes;
  s.inbox[0] = reinterpret_cast<const uint2*>(base + s.inbox_offset[0]);
  s.inbox[1] = reinterpret_cast<const uint2*>(base + s.inbox_offset[1]);
  s.args.max_tokens = max_tokens;
  s.args.n_ranks = n_ranks;
  s.args.rank = comm.rank();
  s.args.width = width;
  const auto stream = static_cast<cudaStream_t>(comm.stream());
  TANDEM_CUDA_CHECK(cudaMalloc(&s.args.counters, 2 * sizeof(uint32_t)));
  TANDEM_CUDA_CHECK(cudaHostAlloc(&s.abort_host, sizeof(int), cudaHostAllocMapped));
  *s.abort_host = 0;
  int* abort_device = nullptr;
  TANDEM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&abort_device), s.abort_host, 0));
  s.args.abort = abort_device;
  // Zeroed inboxes (epoch 0: nothing sent) and counters, and a probe in
  // part 0: this rank's number + 1.
  // NCCL sets up the window's device description on its own streams: the
  // whole device is waited for before it is read.
  const float probe = static_cast<float>(comm.rank() + 1);
  cudaError_t e = cudaMemsetAsync(base + s.inbox_offset[0], 0, 2 * inbox_bytes, stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(s.args.counters, 0, 2 * sizeof(uint32_t), stream);
  if (e == cudaSuccess) e = cudaMemcpyAsync(s.parts[0], &probe, sizeof probe, cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  TANDEM_CUDA_CHECK(e);
  // Where this rank sees every rank's window (NCCL's own mapping of each,
  // this rank's included: an alias of `base`), and its rank in the window's
  // load/store team, which must be its rank in the clique.
  std::array<char*, kMaxRanks> bases{};
  int lsa_rank = -1;
  if (window != nullptr) {
    char** bases_dev = nullptr;
    TANDEM_CUDA_CHECK(cudaMalloc(&bases_dev, sizeof(char*) * kMaxRanks + sizeof(int)));
    int* lsa_rank_dev = reinterpret_cast<int*>(bases_dev + kMaxRanks);
    window_bases_kernel<<<1, 1, 0, stream>>>(window, n_ranks, bases_dev, lsa_rank_dev);
    e = cudaGetLastError();
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(bases.data(), bases_dev, sizeof(char*) * kMaxRanks, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(&lsa_rank, lsa_rank_dev, sizeof(int), cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    cudaFree(bases_dev);
    TANDEM_CUDA_CHECK(e);
  }
  const bool mapped = window != nullptr && lsa_rank == comm.rank();
  // The agreement is also the point after which every rank's flags are
  // zeroed and its probe written.
  if (!comm.agree(mapped, wait))
    return refuse(window == nullptr ? "NCCL gave the shared buffer no window handle"
                  : mapped          ? "another rank's window has another rank order"
                                    : "this rank is number " + std::to_string(lsa_rank) +
                                 " in its window's load/store team, " + std::to_string(comm.rank()) +
                                 " in the clique");
  // Every rank's probe, read through the mapping.
  std::array<float, kMaxRanks> probes{};
  {
    float* probes_dev = nullptr;
    TANDEM_CUDA_CHECK(cudaMalloc(&probes_dev, sizeof(float) * kMaxRanks));
    char** bases_dev = nullptr;
    e = cudaMalloc(&bases_dev, sizeof(char*) * kMaxRanks);
    if (e == cudaSuccess) e = cudaMemcpyAsync(bases_dev, bases.data(), sizeof(char*) * kMaxRanks, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess) {
      read_probes_kernel<<<1, 1, 0, stream>>>(bases_dev, n_ranks, 0, probes_dev);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(probes.data(), probes_dev, sizeof(float) * kMaxRanks, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    cudaFree(probes_dev);
    cudaFree(bases_dev);
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

void NcclTensorReduce::abort() {
  if (state_->abort_host != nullptr) *reinterpret_cast<volatile int*>(state_->abort_host) = 1;
}

void NcclTensorReduce::reduce_norm(int slot, const cuda::ReduceNormArgs& a, cudaStream_t stream) {
  State& s = *state_;
  check(a.n_rows >= 0 && a.n_rows <= s.max_tokens && (a.q == nullptr || a.n_quantized <= a.n_rows),
        "internal: a tensor reduction of " + std::to_string(a.n_rows) + " rows (at most " +
            std::to_string(s.max_tokens) + ")");
  if (a.n_rows == 0) return;
  KernelArgs k = s.args;
  k.a = a;
  if (k.a.q == nullptr) k.a.n_quantized = 0;
  k.part = s.parts[slot & 1];
  k.inbox_offset = s.inbox_offset[slot & 1];
  k.inbox = s.inbox[slot & 1];
  // Rows are dealt to the blocks in turn; a block sends all its rows before
  // it waits for any, and every block fits on the GPU at once, so no
  // block's wait holds up a sender.
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(a.n_rows, kMaxBlocks));
  const int64_t chunks = (s.args.width / 4 + cuda::rmsnorm_row::kThreads - 1) / cuda::rmsnorm_row::kThreads;
  launch_reduce(chunks, grid, dim3(cuda::rmsnorm_row::kThreads), stream, k);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::parallel
