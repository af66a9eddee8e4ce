// NcclCommunicator on real GPUs (label gpu): a world of one rank on GPU 0
// (all-reduce and all-gather leave the data as it is), and, where two GPUs
// are visible, two ranks on two threads (sums, gathers and a send/recv).
#include "backends/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace tandem::parallel {
namespace {

// A device buffer of n floats, freed on scope exit.
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(float)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<float>& v) {
    ASSERT_EQ(cudaMemcpy(ptr, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<float> download() const {
    std::vector<float> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), ptr, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  float* ptr = nullptr;
  size_t n;
};

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

TEST(NcclCommunicator, WorldOfOneKeepsTheData) {
  if (device_count() < 1) GTEST_SKIP() << "no GPU visible";
  const bool nvls_was_set = std::getenv("NCCL_NVLS_ENABLE") != nullptr;
  NcclCommunicator comm(make_nccl_unique_id(), 0, 1, 0);
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.world_size(), 1);
  if (!nvls_was_set) {
    EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
  }

  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0.5f * static_cast<float>(i) - 7.0f;
  DeviceBuffer data(host.size()), gathered(host.size());
  data.upload(host);
  comm.all_reduce_sum(data.ptr, static_cast<int64_t>(host.size()));
  comm.all_gather(data.ptr, static_cast<int64_t>(host.size()), gathered.ptr);
  comm.synchronize();
  EXPECT_EQ(data.download(), host);
  EXPECT_EQ(gathered.download(), host);
}

TEST(NcclCommunicator, TwoRanksSumGatherAndPass) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  const int64_t n = 4096;
  std::vector<std::vector<float>> sums(2), gathers(2), received(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      std::vector<float> host(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) host[static_cast<size_t>(i)] = static_cast<float>((rank + 1) * i);
      DeviceBuffer data(static_cast<size_t>(n)), all(static_cast<size_t>(2 * n)), msg(static_cast<size_t>(n));
      data.upload(host);
      comm.all_gather(data.ptr, n, all.ptr);
      comm.all_reduce_sum(data.ptr, n);
      if (rank == 0) comm.send(data.ptr, n, 1);
      else comm.recv(msg.ptr, n, 0);
      comm.synchronize();
      sums[static_cast<size_t>(rank)] = data.download();
      gathers[static_cast<size_t>(rank)] = all.download();
      if (rank == 1) received[1] = msg.download();
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 2; ++rank) {
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(sums[static_cast<size_t>(rank)][static_cast<size_t>(i)], static_cast<float>(3 * i));
      ASSERT_EQ(gathers[static_cast<size_t>(rank)][static_cast<size_t>(i)], static_cast<float>(i));
      ASSERT_EQ(gathers[static_cast<size_t>(rank)][static_cast<size_t>(n + i)], static_cast<float>(2 * i));
    }
  }
  EXPECT_EQ(received[1], sums[0]);
}

// The shared buffer (NCCL's symmetric window where the library and the GPUs
// allow it): in-place sums on it, before and after it grows, equal the sums
// on ordinary memory; where it is refused, the reason is given.
TEST(NcclCommunicator, TwoRanksSumInTheSharedBuffer) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  std::vector<std::vector<std::vector<float>>> sums(2);
  std::vector<std::string> errors(2);
  std::vector<float*> first(2, nullptr);
  std::vector<std::thread> threads;
  const std::vector<int64_t> sizes = {4096, 1000, 3 << 20};  // floats; the last grows it
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      for (const int64_t n : sizes) {
        float* shared = comm.shared_buffer(static_cast<size_t>(n) * sizeof(float));
        if (shared == nullptr) {
          errors[static_cast<size_t>(rank)] = comm.shared_buffer_error();
          return;
        }
        if (first[static_cast<size_t>(rank)] == nullptr) first[static_cast<size_t>(rank)] = shared;
        if (n == 1000) {
          EXPECT_EQ(shared, first[static_cast<size_t>(rank)]) << "a smaller size keeps the memory";
        }
        std::vector<float> host(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) host[static_cast<size_t>(i)] = static_cast<float>((rank + 1) * (i % 1000));
        ASSERT_EQ(cudaMemcpy(shared, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
        comm.all_reduce_sum(shared, n);
        comm.synchronize();
        ASSERT_EQ(cudaMemcpy(host.data(), shared, host.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        sums[static_cast<size_t>(rank)].push_back(std::move(host));
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!errors[0].empty() || !errors[1].empty()) {
    // Both ranks refuse alike (the same library, the same kind of memory).
    EXPECT_FALSE(errors[0].empty());
    EXPECT_FALSE(errors[1].empty());
    GTEST_SKIP() << "no symmetric window here: " << errors[0];
  }
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(sums[static_cast<size_t>(rank)].size(), sizes.size());
    for (size_t k = 0; k < sizes.size(); ++k)
      for (int64_t i = 0; i < sizes[k]; ++i)
        ASSERT_EQ(sums[static_cast<size_t>(rank)][k][static_cast<size_t>(i)], static_cast<float>(3 * (i % 1000)))
            << "rank " << rank << ", size " << sizes[k] << ", element " << i;
  }
}

}  // namespace
}  // namespace tandem::parallel
