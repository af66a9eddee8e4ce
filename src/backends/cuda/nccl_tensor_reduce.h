// cuda::TensorReduce over NCCL's symmetric memory, for the ranks of one
// tensor-parallel group that can load and store each other's memory (the
// GPUs of a host joined by NVLink or PCIe peer access). Built only with
// NCCL (library tandem_nccl).
//
// The memory is the communicator's symmetric window (ncclMemAlloc,
// ncclCommWindowRegister with NCCL_WIN_COLL_SYMMETRIC), which NCCL maps on
// every rank; the kernel finds each peer's mapping through NCCL's device API
// (ncclGetLsaPointer) and stores into it directly. Layout of each rank's
// window, per slot s of 2:
//   part s:  [max_tokens, width] f32, this rank's part (written by its GEMVs)
//   inbox s: [n_ranks, max_tokens, width] words of 8 bytes: a value's bits
//            and the epoch of the reduction that sent it
// A reduction first sends its rows of the part to every other rank's inbox
// (one 8-byte store per value, value and epoch together), then waits in its
// own inbox until each peer's words carry this reduction's epoch, adds them
// and clears their epochs. There is no barrier: a word is valid once its
// epoch is. The epoch counts reductions, alike on every rank, in each
// rank's ordinary memory (graph replays included); 0 marks a consumed word.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "backends/cuda/tensor_reduce.h"

namespace tandem::parallel {

class NcclCommunicator;

class NcclTensorReduce : public cuda::TensorReduce {
 public:
  static constexpr int kMaxRanks = 8;
  static constexpr int kMaxBlocks = 128;  // blocks of one reduction (rows are dealt to them in turn)

  // Collective: every rank of `comm`'s clique calls it at the same point,
  // each on its own thread, with the same arguments; `wait` as for
  // NcclCommunicator::shared_buffer. It takes the communicator's shared
  // buffer (its one window). Null, with the reason in *why, where the group
  // cannot use it: one rank, or more than kMaxRanks, a width the kernel does not
  // take (a multiple of 32, at most 8192), no symmetric window (see
  // shared_buffer), an NCCL built without the device API, or a rank that
  // cannot reach every other by load and store. Every rank gets the same
  // answer. Throws tandem::Error on CUDA failures.
  static std::unique_ptr<NcclTensorReduce> create(NcclCommunicator& comm, int64_t max_tokens, int64_t width,
                                                  const std::function<void()>& wait, std::string* why);
  ~NcclTensorReduce() override;
  NcclTensorReduce(const NcclTensorReduce&) = delete;
  NcclTensorReduce& operator=(const NcclTensorReduce&) = delete;

  int64_t max_tokens() const override;
  int64_t width() const override;
  float* part(int slot) const override;
  void reduce_norm(int slot, const cuda::ReduceNormArgs& args, cudaStream_t stream) override;

  // Lets this rank's queued and running reductions stop waiting for the
  // others (a rank failed and will never arrive): they go on with whatever
  // the parts hold, and the group must not be used afterwards. Safe from any
  // thread, at any time.
  void abort();

 private:
  NcclTensorReduce();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tandem::parallel
