// The tensor-parallel reduction at the end of an attention or FFN block, on
// every visible GPU (one thread each): the fused kernel (NcclTensorReduce:
// the ranks' parts summed over NCCL's symmetric window and the next RMSNorm
// in one kernel) against NCCL's all-reduce in its symmetric window followed
// by the norm kernel, as the runner does either. Both are captured 100 at a
// time in a CUDA graph and replayed, as decode steps are; prints µs per
// reduction on rank 0 at each row count (decode batch size).
//
//   build/bin/nccl_reduce_bench [--ranks N] [--width 4096] [--tokens 1,8,32,128] [--reps 20]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/nccl_tensor_reduce.h"

using namespace tandem;

namespace {

constexpr int kPerGraph = 100;

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    out.push_back(std::strtoll(p, nullptr, 10));
    const char* comma = std::strchr(p, ',');
    if (!comma) break;
    p = comma + 1;
  }
  return out;
}

// Captures kPerGraph calls of `enqueue` on `stream`, replays the graph `reps`
// times after one warm-up, and returns µs per call (this rank's view).
template <typename Enqueue>
double time_graph(cudaStream_t stream, int reps, Enqueue&& enqueue) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  TANDEM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kPerGraph; ++i) enqueue(i);
  TANDEM_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  TANDEM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  TANDEM_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  TANDEM_CUDA_CHECK(cudaEventCreate(&start));
  TANDEM_CUDA_CHECK(cudaEventCreate(&stop));
  TANDEM_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int r = 0; r < reps; ++r) TANDEM_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  TANDEM_CUDA_CHECK(cudaEventRecord(stop, stream));
  TANDEM_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return 1000.0 * ms / (reps * kPerGraph);
}

}  // namespace

int main(int argc, char** argv) {
  int ranks = 0;
  int64_t width = 4096;
  int reps = 20;
  std::vector<int64_t> tokens = {1, 8, 32, 128};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--ranks") ranks = std::atoi(argv[i + 1]);
    else if (a == "--width") width = std::atoll(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--tokens") tokens = parse_list(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  int n_devices = 0;
  TANDEM_CUDA_CHECK(cudaGetDeviceCount(&n_devices));
  if (ranks == 0) ranks = n_devices;
  if (ranks < 2 || ranks > n_devices) {
    std::fprintf(stderr, "needs 2..%d ranks (GPUs), %d asked\n", n_devices, ranks);
    return 1;
  }
  int64_t max_tokens = 0;
  for (int64_t t : tokens) max_tokens = std::max(max_tokens, t);
  std::printf("%d GPUs, rows of %lld floats; µs per reduction (rank 0), graphs of %d\n", ranks,
              static_cast<long long>(width), kPerGraph);
  std::printf("%8s %14s %22s\n", "rows", "fused", "all-reduce + norm");
  const parallel::NcclUniqueId fused_id = parallel::make_nccl_unique_id();
  const parallel::NcclUniqueId plain_id = parallel::make_nccl_unique_id();
  std::vector<std::vector<double>> results(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank] {
      TANDEM_CUDA_CHECK(cudaSetDevice(rank));
      parallel::NcclCommunicator fused_comm(fused_id, rank, ranks, rank);
      const auto stream = static_cast<cudaStream_t>(fused_comm.stream());
      parallel::NcclCommunicator plain_comm(plain_id, rank, ranks, rank, stream);
      std::string why;
      auto reduce = parallel::NcclTensorReduce::create(fused_comm, max_tokens, width, {}, &why);
      float* shared = plain_comm.shared_buffer(static_cast<size_t>(max_tokens * width) * sizeof(float));
      if (!reduce || !shared) {
        std::fprintf(stderr, "rank %d: %s %s\n", rank, why.c_str(), plain_comm.shared_buffer_error().c_str());
        std::exit(1);
      }
      float *x = nullptr, *weight = nullptr, *out = nullptr;
      const size_t bytes = static_cast<size_t>(max_tokens * width) * sizeof(float);
      TANDEM_CUDA_CHECK(cudaMalloc(&x, bytes));
      TANDEM_CUDA_CHECK(cudaMalloc(&out, bytes));
      TANDEM_CUDA_CHECK(cudaMalloc(&weight, static_cast<size_t>(width) * sizeof(float)));
      TANDEM_CUDA_CHECK(cudaMemset(x, 0, bytes));
      TANDEM_CUDA_CHECK(cudaMemset(out, 0, bytes));
      TANDEM_CUDA_CHECK(cudaMemset(shared, 0, bytes));
      TANDEM_CUDA_CHECK(cudaMemset(reduce->part(0), 0, bytes));
      TANDEM_CUDA_CHECK(cudaMemset(reduce->part(1), 0, bytes));
      TANDEM_CUDA_CHECK(cudaMemset(weight, 0, static_cast<size_t>(width) * sizeof(float)));
      TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
      for (int64_t t : tokens) {
        const double fused_us = time_graph(stream, reps, [&](int i) {
          cuda::ReduceNormArgs a;
          a.x = x;
          a.n_rows = t;
          a.weight = weight;
          a.eps = 1e-5f;
          a.out = out;
          reduce->reduce_norm(i % 2, a, stream);
        });
        const double plain_us = time_graph(stream, reps, [&](int) {
          plain_comm.all_reduce_sum(shared, t * width);
          cuda::rmsnorm(shared, nullptr, weight, 1e-5f, t, width, out, stream);
        });
        results[static_cast<size_t>(rank)].push_back(fused_us);
        results[static_cast<size_t>(rank)].push_back(plain_us);
      }
      fused_comm.synchronize();
      plain_comm.release_shared_buffer();
      cudaFree(x);
      cudaFree(out);
      cudaFree(weight);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < tokens.size(); ++i)
    std::printf("%8lld %14.2f %22.2f\n", static_cast<long long>(tokens[i]), results[0][2 * i], results[0][2 * i + 1]);
  return 0;
}
