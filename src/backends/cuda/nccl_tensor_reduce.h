// cuda::TensorReduce over NCCL's symmetric memory, for the ranks of one
// tensor-parallel group that can load and store each other's memory (the
// GPUs of a host joined by NVLink or PCIe peer access). Built only with
// NCCL (library tandem_nccl).
//
// The memory is the communicator's symmetric window (ncclMemAlloc,
// ncclCommWindowRegister with NCCL_WIN_COLL_SYMMETRIC), which NCCL maps on
// every rank; the kernel finds each peer's copy through NCCL's device API
// (ncclGetLsaPointer) and reads it directly. Layout of each rank's window:
//   [flags: kMaxBlocks x kMaxRanks u32] [part 0: max_tokens x width f32] [part 1: the same]
//   [peer rows: 2 slots x kMaxRanks senders x width u64]
// A reduction's blocks meet their peers' blocks of the same index at a
// flag barrier: block b of rank s stores its epoch into flag (b, s) of
// every other rank's window (release, system scope) and waits until its own
// flags (b, r) reach that epoch (acquire). The epochs live in each rank's
// ordinary memory and advance alike on every rank, graph replays included.
// A reduction of peer rows (tensor_reduce.h) skips the barrier: each rank's
// product stores its row, word by word with the slot's epoch, into sender
// slot `rank` of every other rank's peer rows, and the reduction waits in
// its own window for the words of the epoch after the slot's last one
// (kept per slot in ordinary memory, advanced by the reduction).
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
  cuda::PeerRows peer_rows(int slot) const override;

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
