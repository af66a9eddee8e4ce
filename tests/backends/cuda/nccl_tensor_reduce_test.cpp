// NcclTensorReduce on real GPUs (label gpu): the ranks' parts summed onto x
// in rank order (the same bits on every rank as the host's float sums), then
// the norm and quantization with cuda::rmsnorm's bits and within tolerance
// of the CPU twin (cpu::rmsnorm). Where two GPUs are visible: two ranks on
// two threads, several reductions on alternating slots, rows of 8192 and
// 2560, reductions queued back to back, and a wait for a rank that never
// comes, ended by abort(); and reductions of peer rows against the barrier's
// bits.
#include "backends/cuda/nccl_tensor_reduce.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/nccl_communicator.h"

namespace tandem::parallel {
namespace {

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// One reduction's inputs and what it gave on one rank.
struct Case {
  int64_t tokens = 0;           // rows of x
  std::vector<int32_t> rows;    // rows reduced and normalized (empty: all)
  int64_t n_quantized = 0;
  int64_t width = 4096;         // the reduction's row width
};
struct Result {
  std::vector<float> x, out, d;
  std::vector<int8_t> q;
};

constexpr int64_t kWidth = 4096;
constexpr float kEps = 1e-5f;

// x: [tokens, width], each rank's part: [tokens, width], weight: [width].
struct Inputs {
  std::vector<float> x, weight;
  std::vector<std::vector<float>> parts;  // by rank
};

Inputs make_inputs(const Case& c, int n_ranks, uint32_t seed) {
  Inputs in;
  const size_t n = static_cast<size_t>(c.tokens * c.width);
  in.x = random_vector(n, seed);
  in.weight = random_vector(static_cast<size_t>(c.width), seed + 1);
  for (int r = 0; r < n_ranks; ++r) in.parts.push_back(random_vector(n, seed + 2 + static_cast<uint32_t>(r)));
  return in;
}

// Runs one reduction on this rank: uploads x and this rank's part, reduces
// on `slot`, and brings back x, the norm and the quants.
Result run_case(NcclTensorReduce& reduce, cudaStream_t stream, const Case& c, const Inputs& in, int rank, int slot) {
  const int64_t n_out = c.rows.empty() ? c.tokens : static_cast<int64_t>(c.rows.size());
  float* x = to_device(in.x);
  float* weight = to_device(in.weight);
  int32_t* rows = c.rows.empty() ? nullptr : to_device(c.rows);
  float *out = nullptr, *d = nullptr;
  int8_t* q = nullptr;
  EXPECT_EQ(cudaMalloc(&out, static_cast<size_t>(n_out * c.width) * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&q, static_cast<size_t>(n_out * c.width)), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&d, static_cast<size_t>(n_out * c.width / 32) * sizeof(float)), cudaSuccess);
  const std::vector<float>& part = in.parts[static_cast<size_t>(rank)];
  EXPECT_EQ(cudaMemcpy(reduce.part(slot), part.data(), part.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  cuda::ReduceNormArgs a;
  a.x = x;
  a.rows = rows;
  a.n_rows = n_out;
  a.weight = weight;
  a.eps = kEps;
  a.out = out;
  a.q = q;
  a.d = d;
  a.n_quantized = c.n_quantized;
  reduce.reduce_norm(slot, a, stream);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  Result r;
  r.x = to_host(x, in.x.size());
  r.out = to_host(out, static_cast<size_t>(n_out * c.width));
  r.q = to_host(q, static_cast<size_t>(c.n_quantized * c.width));
  r.d = to_host(d, static_cast<size_t>(c.n_quantized * c.width / 32));
  for (void* p : {static_cast<void*>(x), static_cast<void*>(weight), static_cast<void*>(rows),
                  static_cast<void*>(out), static_cast<void*>(q), static_cast<void*>(d)})
    cudaFree(p);
  return r;
}

// Checks a rank's result against the host: the reduced rows are x + part 0
// + part 1 + ... in float (the same bits), written back to x where no rows
// were listed; the norm and quants are cuda::rmsnorm's of those rows (the
// same bits) and within tolerance of cpu::rmsnorm.
void check_result(const Case& c, const Inputs& in, const Result& got, const std::string& what) {
  std::vector<int32_t> rows = c.rows;
  if (rows.empty())
    for (int32_t i = 0; i < c.tokens; ++i) rows.push_back(i);
  std::vector<float> want_x = in.x;
  for (int32_t row : rows) {
    for (int64_t j = 0; j < c.width; ++j) {
      const size_t i = static_cast<size_t>(row * c.width + j);
      float v = in.x[i];
      for (const std::vector<float>& p : in.parts) v += p[i];
      want_x[i] = v;
    }
  }
  const std::vector<float>& x_after = c.rows.empty() ? want_x : in.x;
  ASSERT_EQ(0, std::memcmp(got.x.data(), x_after.data(), x_after.size() * sizeof(float))) << what << ": x";
  // The plain norm kernel on the reduced x.
  float* dx = to_device(want_x);
  float* dw = to_device(in.weight);
  int32_t* drows = to_device(rows);
  const int64_t n_out = static_cast<int64_t>(rows.size());
  float *out = nullptr, *d = nullptr;
  int8_t* q = nullptr;
  ASSERT_EQ(cudaMalloc(&out, static_cast<size_t>(n_out * c.width) * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&q, static_cast<size_t>(n_out * c.width)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d, static_cast<size_t>(n_out * c.width / 32) * sizeof(float)), cudaSuccess);
  cuda::rmsnorm(dx, drows, dw, kEps, n_out, c.width, out, nullptr, q, d, c.n_quantized);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> plain_out = to_host(out, static_cast<size_t>(n_out * c.width));
  const std::vector<int8_t> plain_q = to_host(q, static_cast<size_t>(c.n_quantized * c.width));
  const std::vector<float> plain_d = to_host(d, static_cast<size_t>(c.n_quantized * c.width / 32));
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(drows), static_cast<void*>(out),
                  static_cast<void*>(q), static_cast<void*>(d)})
    cudaFree(p);
  ASSERT_EQ(0, std::memcmp(got.out.data(), plain_out.data(), plain_out.size() * sizeof(float))) << what << ": norm";
  ASSERT_EQ(got.q, plain_q) << what << ": quants";
  ASSERT_EQ(0, std::memcmp(got.d.data(), plain_d.data(), plain_d.size() * sizeof(float))) << what << ": scales";
  // The CPU twin.
  std::vector<float> ref(static_cast<size_t>(c.width));
  for (size_t i = 0; i < rows.size(); ++i) {
    cpu::rmsnorm(want_x.data() + rows[i] * c.width, in.weight.data(), kEps, ref.data(), c.width);
    for (int64_t j = 0; j < c.width; ++j)
      ASSERT_NEAR(got.out[i * c.width + j], ref[static_cast<size_t>(j)], 1e-4 * (1 + std::fabs(ref[static_cast<size_t>(j)])))
          << what << ": row " << rows[i] << " column " << j;
  }
}

std::unique_ptr<NcclTensorReduce> make_reduce(NcclCommunicator& comm, int64_t max_tokens, int64_t width = kWidth) {
  std::string why;
  auto reduce = NcclTensorReduce::create(comm, max_tokens, width, {}, &why);
  EXPECT_NE(reduce, nullptr) << "refused: " << why;
  return reduce;
}

// The cases: one row (a decode step of one sequence), several rows with
// only some quantized, chosen rows in another order and one twice (the LM
// head's), and more rows than a reduction has blocks (rows dealt to blocks
// in turn).
std::vector<Case> cases() {
  return {Case{1, {}, 1}, Case{5, {}, 3}, Case{6, {4, 1, 4}, 2}, Case{NcclTensorReduce::kMaxBlocks + 5, {}, 7}};
}

// A world of one has nothing to reduce (setting one up hit an illegal
// memory access with NCCL 2.28.3 on an H200): it is refused before any
// collective.
TEST(NcclTensorReduce, WorldOfOneIsRefused) {
  if (device_count() < 1) GTEST_SKIP() << "no GPU visible";
  NcclCommunicator comm(make_nccl_unique_id(), 0, 1, 0);
  std::string why;
  EXPECT_EQ(NcclTensorReduce::create(comm, 8, kWidth, {}, &why), nullptr);
  EXPECT_NE(why.find("one rank"), std::string::npos) << why;
}

// With NCCL's symmetric memory off (NCCL_WIN_ENABLE=0), registering the
// shared buffer gives no window that a kernel can read (reading one faulted
// with an illegal memory access on two H200s): every rank refuses, saying
// why, the communicator reports no window, and NCCL's all-reduce still sums
// in the shared buffer, where the runner then keeps the residual (or, where
// NCCL refused the registration itself, in ordinary memory). Runs in a
// child process (NCCL reads its settings once a process) and exits 0 when
// all holds.
[[noreturn]] void refuse_without_symmetric_memory() {
  setenv("NCCL_WIN_ENABLE", "0", 1);
  const NcclUniqueId id = make_nccl_unique_id();
  std::string why[2];
  bool refused[2] = {false, false}, no_window[2] = {false, false}, summed[2] = {false, false};
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      refused[rank] = NcclTensorReduce::create(comm, 8, kWidth, {}, &why[rank]) == nullptr;
      no_window[rank] = comm.shared_window() == nullptr;
      // The all-reduce: 1 + 2 on every rank, in the shared buffer as the
      // runner uses it (collective, like the runner's call at load).
      float* x = comm.shared_buffer(sizeof(float));
      float* own = nullptr;
      if (x == nullptr) {
        if (cudaMalloc(&own, sizeof(float)) != cudaSuccess) return;
        x = own;
      }
      const float v = static_cast<float>(rank + 1);
      float got = 0.0f;
      cudaMemcpy(x, &v, sizeof v, cudaMemcpyHostToDevice);
      comm.all_reduce_sum(x, 1);
      comm.synchronize();
      cudaMemcpy(&got, x, sizeof got, cudaMemcpyDeviceToHost);
      if (own != nullptr) cudaFree(own);
      summed[rank] = got == 3.0f;
    });
  }
  for (auto& t : threads) t.join();
  bool ok = true;
  for (int r = 0; r < 2; ++r) {
    std::fprintf(stderr, "rank %d: refused %d, no window %d, summed %d: %s\n", r, refused[r], no_window[r], summed[r],
                 why[r].c_str());
    // The reason names the missing window, or NCCL's refusal to register.
    const bool named = why[r].find("symmetric window") != std::string::npos ||
                       why[r].find("ncclCommWindowRegister") != std::string::npos;
    ok = ok && refused[r] && no_window[r] && summed[r] && named;
  }
  std::exit(ok ? 0 : 1);
}

TEST(NcclTensorReduce, NoSymmetricMemoryIsRefused) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(refuse_without_symmetric_memory(), ::testing::ExitedWithCode(0), "");
}

TEST(NcclTensorReduce, TwoRanksSumInRankOrder) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  const std::vector<Case> all = cases();
  std::vector<Inputs> inputs;
  for (size_t i = 0; i < all.size(); ++i) inputs.push_back(make_inputs(all[i], 2, static_cast<uint32_t>(100 + 10 * i)));
  // Each case twice, so that both slots see every case.
  std::vector<std::vector<Result>> results(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      auto reduce = make_reduce(comm, NcclTensorReduce::kMaxBlocks + 5);
      if (reduce == nullptr) return;
      const auto stream = static_cast<cudaStream_t>(comm.stream());
      int slot = 0;
      for (int round = 0; round < 2; ++round) {
        for (size_t i = 0; i < all.size(); ++i) {
          results[static_cast<size_t>(rank)].push_back(run_case(*reduce, stream, all[i], inputs[i], rank, slot));
          slot ^= 1;
        }
      }
      comm.synchronize();
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(results[0].size(), 2 * all.size());
  ASSERT_EQ(results[1].size(), 2 * all.size());
  for (size_t k = 0; k < results[0].size(); ++k) {
    const size_t i = k % all.size();
    const std::string what = "case " + std::to_string(i) + " round " + std::to_string(k / all.size());
    check_result(all[i], inputs[i], results[0][k], what + " rank 0");
    check_result(all[i], inputs[i], results[1][k], what + " rank 1");
  }
}

// Rows of 8192 (the 70B shape: eight float4 pieces a thread) and 2560 (a
// partial last piece: three of four), each width with its own communicator
// (a communicator has one window).
TEST(NcclTensorReduce, TwoRanksOtherWidths) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  for (int64_t width : {8192, 2560}) {
    const NcclUniqueId id = make_nccl_unique_id();
    const std::vector<Case> all = {Case{1, {}, 1, width}, Case{3, {2, 0}, 2, width}, Case{4, {}, 4, width}};
    std::vector<Inputs> inputs;
    for (size_t i = 0; i < all.size(); ++i) inputs.push_back(make_inputs(all[i], 2, static_cast<uint32_t>(300 + i)));
    std::vector<std::vector<Result>> results(2);
    std::vector<std::thread> threads;
    for (int rank = 0; rank < 2; ++rank) {
      threads.emplace_back([&, rank] {
        NcclCommunicator comm(id, rank, 2, rank);
        auto reduce = make_reduce(comm, 4, width);
        if (reduce == nullptr) return;
        const auto stream = static_cast<cudaStream_t>(comm.stream());
        for (size_t i = 0; i < all.size(); ++i)
          results[static_cast<size_t>(rank)].push_back(
              run_case(*reduce, stream, all[i], inputs[i], rank, static_cast<int>(i % 2)));
        comm.synchronize();
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(results[0].size(), all.size()) << width;
    ASSERT_EQ(results[1].size(), all.size()) << width;
    for (size_t i = 0; i < all.size(); ++i) {
      const std::string what = "width " + std::to_string(width) + " case " + std::to_string(i);
      check_result(all[i], inputs[i], results[0][i], what + " rank 0");
      check_result(all[i], inputs[i], results[1][i], what + " rank 1");
    }
  }
}

// Reductions queued back to back with no host wait between them, as a step
// queues them: each rank copies iteration i's part into the slot on its
// stream, then reduces; x accumulates every iteration's parts. A rank that
// overwrote a slot a peer still read would change the final x.
TEST(NcclTensorReduce, TwoRanksBackToBack) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  constexpr int kIterations = 24;
  constexpr int64_t kTokens = 3;
  const size_t n = static_cast<size_t>(kTokens * kWidth);
  const std::vector<float> x0 = random_vector(n, 500);
  const std::vector<float> weight = random_vector(static_cast<size_t>(kWidth), 501);
  std::vector<std::vector<float>> parts(2);  // by rank: [kIterations, kTokens, kWidth]
  for (int r = 0; r < 2; ++r) parts[static_cast<size_t>(r)] = random_vector(kIterations * n, 510 + static_cast<uint32_t>(r));
  std::vector<std::vector<float>> final_x(2), final_out(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      auto reduce = make_reduce(comm, kTokens);
      if (reduce == nullptr) return;
      const auto stream = static_cast<cudaStream_t>(comm.stream());
      float* x = to_device(x0);
      float* w = to_device(weight);
      float* all_parts = to_device(parts[static_cast<size_t>(rank)]);
      float* out = nullptr;
      ASSERT_EQ(cudaMalloc(&out, n * sizeof(float)), cudaSuccess);
      for (int i = 0; i < kIterations; ++i) {
        const int slot = i % 2;
        ASSERT_EQ(cudaMemcpyAsync(reduce->part(slot), all_parts + static_cast<size_t>(i) * n, n * sizeof(float),
                                  cudaMemcpyDeviceToDevice, stream),
                  cudaSuccess);
        cuda::ReduceNormArgs a;
        a.x = x;
        a.n_rows = kTokens;
        a.weight = w;
        a.eps = kEps;
        a.out = out;
        reduce->reduce_norm(slot, a, stream);
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      final_x[static_cast<size_t>(rank)] = to_host(x, n);
      final_out[static_cast<size_t>(rank)] = to_host(out, n);
      for (float* p : {x, w, all_parts, out}) cudaFree(p);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<float> want = x0;
  for (int i = 0; i < kIterations; ++i)
    for (size_t j = 0; j < n; ++j) want[j] = (want[j] + parts[0][static_cast<size_t>(i) * n + j]) + parts[1][static_cast<size_t>(i) * n + j];
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(final_x[static_cast<size_t>(r)].size(), n) << "rank " << r;
    ASSERT_EQ(0, std::memcmp(final_x[static_cast<size_t>(r)].data(), want.data(), n * sizeof(float))) << "rank " << r;
  }
  EXPECT_EQ(0, std::memcmp(final_out[0].data(), final_out[1].data(), n * sizeof(float)));
  std::vector<float> ref(static_cast<size_t>(kWidth));
  for (int64_t t = 0; t < kTokens; ++t) {
    cpu::rmsnorm(want.data() + t * kWidth, weight.data(), kEps, ref.data(), kWidth);
    for (int64_t j = 0; j < kWidth; ++j)
      ASSERT_NEAR(final_out[0][static_cast<size_t>(t * kWidth + j)], ref[static_cast<size_t>(j)],
                  1e-4 * (1 + std::fabs(ref[static_cast<size_t>(j)])));
  }
}

// Peer rows: one-token products that store their rows into the other
// rank's memory (cuda::gemv_to_peers, cuda::gemv_q8_to_peers), each
// reduced without the barrier, give the bits of the plain GEMV into
// part(slot) and the barrier reduction: x, the norm and the quants, after
// every reduction of a run that alternates the slots, plain and silu·mul
// inputs, f16, bf16, int8 rows and Q8_0 (each with rows of one load slot a
// thread and of two), mixes in barrier reductions on the same slots, and
// ends with a listed row (the LM head's reduction, which leaves x alone).
TEST(NcclTensorReduce, TwoRanksPeerRowsGiveTheBarrierBits) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  constexpr int kIterations = 12;
  constexpr int64_t kCols = 1024, kSiluCols = 512;  // the products' inputs
  // 8-bit iterations: int8 rows and Q8_0, plain, then silu·mul over rows
  // wider than one load slot a thread (4608 columns; the last, Q8_0, is the
  // reduction with a listed row).
  constexpr int kInt8 = 3, kInt8Wide = 8, kQ8_0 = 10, kQ8_0Wide = 11;
  constexpr int64_t kWideCols = 4608;
  const size_t w = static_cast<size_t>(kWidth);
  const std::vector<float> x0 = random_vector(w, 900);
  const std::vector<float> norm = random_vector(w, 901);
  // What each run leaves after every reduction: [kIterations, width].
  struct Run {
    std::vector<float> x, out, d;
    std::vector<int8_t> q;
  };
  std::vector<Run> peer_runs(2), barrier_runs(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      NcclCommunicator comm(id, rank, 2, rank);
      auto reduce = make_reduce(comm, 4);
      if (reduce == nullptr) return;
      const auto stream = static_cast<cudaStream_t>(comm.stream());
      // This rank's weights: f16 for even iterations, bf16 for odd ones.
      const uint32_t seed = 910 + 10 * static_cast<uint32_t>(rank);
      const std::vector<float> wp = random_vector(w * kCols, seed), ws = random_vector(w * kSiluCols, seed + 1);
      std::vector<__half> wp16(wp.size()), ws16(ws.size());
      std::vector<__nv_bfloat16> wpb(wp.size()), wsb(ws.size());
      for (size_t i = 0; i < wp.size(); ++i) wp16[i] = __float2half(wp[i] * 0.05f), wpb[i] = __float2bfloat16(wp[i] * 0.05f);
      for (size_t i = 0; i < ws.size(); ++i) ws16[i] = __float2half(ws[i] * 0.05f), wsb[i] = __float2bfloat16(ws[i] * 0.05f);
      __half* d_wp16 = to_device(wp16);
      __half* d_ws16 = to_device(ws16);
      __nv_bfloat16* d_wpb = to_device(wpb);
      __nv_bfloat16* d_wsb = to_device(wsb);
      const std::vector<float> inputs = random_vector(kIterations * kCols, seed + 2);
      float* d_inputs = to_device(inputs);
      // 8-bit weights: quants in [-127, 127]; int8 rows' scales per row,
      // Q8_0's per 32 values (f16).
      auto random_quants = [](size_t n, uint32_t seed) {
        std::mt19937 rng(seed);
        std::uniform_int_distribution<int> dist(-127, 127);
        std::vector<int8_t> q(n);
        for (int8_t& v : q) v = static_cast<int8_t>(dist(rng));
        return q;
      };
      int8_t* d_i8 = to_device(random_quants(w * kCols, seed + 3));
      int8_t* d_i8_wide = to_device(random_quants(w * kWideCols, seed + 4));
      int8_t* d_q80 = to_device(random_quants(w * kCols, seed + 5));
      int8_t* d_q80_wide = to_device(random_quants(w * kWideCols, seed + 9));
      std::vector<float> row_scales = random_vector(w, seed + 6);
      for (float& v : row_scales) v = 0.001f + std::fabs(v) * 0.0005f;
      float* d_row_scales = to_device(row_scales);
      const std::vector<float> block_scales_f = random_vector(w * (kWideCols / 32), seed + 7);  // wide enough for both
      std::vector<__half> block_scales(block_scales_f.size());
      for (size_t i = 0; i < block_scales.size(); ++i)
        block_scales[i] = __float2half(0.001f + std::fabs(block_scales_f[i]) * 0.0005f);
      __half* d_block_scales = to_device(block_scales);
      float* d_wide_in = to_device(random_vector(2 * kWideCols, seed + 8));  // gate then up
      int8_t* d_xq = nullptr;
      float* d_xd = nullptr;
      ASSERT_EQ(cudaMalloc(&d_xq, kWideCols), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&d_xd, kWideCols / 32 * sizeof(float)), cudaSuccess);
      float* d_norm = to_device(norm);
      const std::vector<int32_t> head_row{0};
      int32_t* d_head_row = to_device(head_row);
      auto run = [&](bool peers, int i, int slot, float* x, float* out, int8_t* q, float* d) {
        const bool eight_bit = i == kInt8 || i == kInt8Wide || i == kQ8_0 || i == kQ8_0Wide;
        const bool silu = i % 3 == 2, bf16 = i % 2 == 1;
        cuda::DeviceMatrix m{bf16 ? cuda::WeightFormat::BF16 : cuda::WeightFormat::F16, kWidth,
                             silu ? kSiluCols : kCols,
                             silu ? (bf16 ? static_cast<const void*>(d_wsb) : d_ws16)
                                  : (bf16 ? static_cast<const void*>(d_wpb) : d_wp16),
                             nullptr};
        if (i == kInt8) m = {cuda::WeightFormat::I8Row, kWidth, kCols, d_i8, d_row_scales};
        if (i == kInt8Wide) m = {cuda::WeightFormat::I8Row, kWidth, kWideCols, d_i8_wide, d_row_scales};
        if (i == kQ8_0) m = {cuda::WeightFormat::Q8_0, kWidth, kCols, d_q80, d_block_scales};
        if (i == kQ8_0Wide) m = {cuda::WeightFormat::Q8_0, kWidth, kWideCols, d_q80_wide, d_block_scales};
        const float* in = d_inputs + static_cast<size_t>(i) * kCols;  // silu: gate then up, kSiluCols each
        if (i == kInt8Wide || i == kQ8_0Wide) in = d_wide_in;
        // Every fourth reduction of the peer run takes the barrier too (the
        // last one, with its listed row, takes peer rows).
        const bool from_peers = peers && i % 4 != 1;
        if (eight_bit) {
          if (silu) cuda::quantize_silu_mul(in, 1, m.cols, d_xq, d_xd, stream);
          else cuda::quantize_activations(in, 1, m.cols, d_xq, d_xd, stream);
        }
        if (from_peers) {
          const cuda::PeerRows p = reduce->peer_rows(slot);
          ASSERT_EQ(p.n_peers, 1);
          if (eight_bit) {
            ASSERT_TRUE(cuda::gemv_q8_to_peers_takes(m));
            cuda::gemv_q8_to_peers(m, d_xq, d_xd, reduce->part(slot), p, stream);
          } else {
            cuda::gemv_to_peers(m, in, silu, reduce->part(slot), p, stream);
          }
        } else if (eight_bit) {
          cuda::gemv_q8(m, d_xq, d_xd, 1, reduce->part(slot), kWidth, false, stream);
        } else if (silu) {
          cuda::gemv_silu_mul(m, in, 1, reduce->part(slot), kWidth, false, stream);
        } else {
          cuda::gemv(m, in, 1, reduce->part(slot), kWidth, false, stream);
        }
        cuda::ReduceNormArgs a;
        a.x = x;
        a.rows = i + 1 == kIterations ? d_head_row : nullptr;
        a.n_rows = 1;
        a.weight = d_norm;
        a.eps = kEps;
        a.out = out + static_cast<size_t>(i) * w;
        a.q = q + static_cast<size_t>(i) * w;
        a.d = d + static_cast<size_t>(i) * (w / 32);
        a.n_quantized = 1;
        a.from_peer_rows = from_peers;
        reduce->reduce_norm(slot, a, stream);
        ASSERT_EQ(cudaMemcpyAsync(x + static_cast<size_t>(i + 1) * w, x, w * sizeof(float), cudaMemcpyDeviceToDevice,
                                  stream),
                  cudaSuccess);
      };
      // x's row then its copy after each reduction; out, q, d one row each.
      std::vector<float*> xs(2), outs(2), ds(2);
      std::vector<int8_t*> qs(2);
      for (int k = 0; k < 2; ++k) {
        xs[k] = to_device(std::vector<float>((kIterations + 1) * w, 0.0f));
        ASSERT_EQ(cudaMemcpy(xs[k], x0.data(), w * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&outs[k], kIterations * w * sizeof(float)), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&qs[k], kIterations * w), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&ds[k], kIterations * (w / 32) * sizeof(float)), cudaSuccess);
      }
      // Consecutive reductions alternate the slots: peer 0, barrier 1,
      // barrier 0, peer 1, ...
      for (int i = 0; i < kIterations; ++i) {
        const int first = i % 2 == 0 ? 0 : 1;  // 0: the peer run first
        for (int k = 0; k < 2; ++k) {
          const int which = k == 0 ? first : 1 - first;
          run(which == 0, i, (2 * i + k) % 2 == 0 ? 0 : 1, xs[which], outs[which], qs[which], ds[which]);
        }
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      for (int k = 0; k < 2; ++k) {
        Run& r = (k == 0 ? peer_runs : barrier_runs)[static_cast<size_t>(rank)];
        r.x = to_host(xs[k] + w, kIterations * w);
        r.out = to_host(outs[k], kIterations * w);
        r.q = to_host(qs[k], kIterations * w);
        r.d = to_host(ds[k], kIterations * (w / 32));
        for (void* p : {static_cast<void*>(xs[k]), static_cast<void*>(outs[k]), static_cast<void*>(qs[k]),
                        static_cast<void*>(ds[k])})
          cudaFree(p);
      }
      for (void* p : {static_cast<void*>(d_wp16), static_cast<void*>(d_ws16), static_cast<void*>(d_wpb),
                      static_cast<void*>(d_wsb), static_cast<void*>(d_inputs), static_cast<void*>(d_norm),
                      static_cast<void*>(d_head_row), static_cast<void*>(d_i8), static_cast<void*>(d_i8_wide),
                      static_cast<void*>(d_q80), static_cast<void*>(d_q80_wide), static_cast<void*>(d_row_scales),
                      static_cast<void*>(d_block_scales), static_cast<void*>(d_wide_in), static_cast<void*>(d_xq),
                      static_cast<void*>(d_xd)})
        cudaFree(p);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    const Run& p = peer_runs[static_cast<size_t>(r)];
    const Run& b = barrier_runs[static_cast<size_t>(r)];
    ASSERT_EQ(p.x.size(), kIterations * w) << "rank " << r << " did not run";
    ASSERT_EQ(b.x.size(), kIterations * w) << "rank " << r << " did not run";
    for (int i = 0; i < kIterations; ++i) {
      const size_t at = static_cast<size_t>(i) * w;
      EXPECT_EQ(0, std::memcmp(p.x.data() + at, b.x.data() + at, w * sizeof(float))) << "rank " << r << " x after " << i;
      EXPECT_EQ(0, std::memcmp(p.out.data() + at, b.out.data() + at, w * sizeof(float))) << "rank " << r << " norm " << i;
      EXPECT_EQ(0, std::memcmp(p.q.data() + at, b.q.data() + at, w)) << "rank " << r << " quants " << i;
      EXPECT_EQ(0, std::memcmp(p.d.data() + at / 32, b.d.data() + at / 32, w / 32 * sizeof(float)))
          << "rank " << r << " scales " << i;
    }
    // The sums moved x (the products are not zero), and both ranks agree.
    EXPECT_NE(0, std::memcmp(p.x.data(), x0.data(), w * sizeof(float))) << "rank " << r;
    EXPECT_EQ(0, std::memcmp(p.out.data(), peer_runs[0].out.data(), p.out.size() * sizeof(float))) << "rank " << r;
  }
}

// A rank that never reaches the reduction leaves the other waiting until
// abort(); the wait then ends and the stream drains.
TEST(NcclTensorReduce, AbortEndsTheWaitForAMissingRank) {
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const NcclUniqueId id = make_nccl_unique_id();
  std::vector<std::unique_ptr<NcclCommunicator>> comms(2);
  std::vector<std::unique_ptr<NcclTensorReduce>> reduces(2);
  {
    std::vector<std::thread> threads;
    for (int rank = 0; rank < 2; ++rank) {
      threads.emplace_back([&, rank] {
        comms[static_cast<size_t>(rank)] = std::make_unique<NcclCommunicator>(id, rank, 2, rank);
        reduces[static_cast<size_t>(rank)] = make_reduce(*comms[static_cast<size_t>(rank)], 4);
      });
    }
    for (auto& t : threads) t.join();
  }
  ASSERT_NE(reduces[0], nullptr);
  ASSERT_NE(reduces[1], nullptr);
  // Rank 0 alone reduces one row.
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const Case c{1, {}, 0};
  const Inputs in = make_inputs(c, 2, 7);
  float* x = to_device(in.x);
  float* weight = to_device(in.weight);
  float* out = nullptr;
  ASSERT_EQ(cudaMalloc(&out, kWidth * sizeof(float)), cudaSuccess);
  cuda::ReduceNormArgs a;
  a.x = x;
  a.n_rows = 1;
  a.weight = weight;
  a.eps = kEps;
  a.out = out;
  const auto stream = static_cast<cudaStream_t>(comms[0]->stream());
  reduces[0]->reduce_norm(0, a, stream);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(cudaStreamQuery(stream), cudaErrorNotReady) << "the reduction did not wait for rank 1";
  reduces[0]->abort();
  const auto start = std::chrono::steady_clock::now();
  while (cudaStreamQuery(stream) == cudaErrorNotReady &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(10))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess) << "abort() did not end the wait";
  cudaFree(x);
  cudaFree(weight);
  cudaFree(out);
  // Both ranks tear down at once, each on its own thread (their windows go
  // with ncclCommDestroy).
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      cudaSetDevice(rank);
      reduces[static_cast<size_t>(rank)].reset();
      comms[static_cast<size_t>(rank)].reset();
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace
}  // namespace tandem::parallel
