// Communicator over NCCL, for GPUs of one host (one thread per GPU) or, with
// the unique id broadcast by an MPI launcher, of several hosts. Built only
// when TANDEM_CUDA is on and NCCL is found (TANDEM_HAVE_NCCL); this header
// holds no CUDA or NCCL types, so CPU code may include it.
//
// Buffers are device pointers on the communicator's GPU. Operations are
// queued on the communicator's stream and return at once; queue the kernels
// that produce and consume the buffers on the same stream (stream()), or
// call synchronize().
#pragma once

#include <array>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace tandem::parallel {

// NCCL's unique id (ncclUniqueId, NCCL_UNIQUE_ID_BYTES = 128 bytes). One rank
// makes it; every rank of the clique passes the same bytes to the constructor.
struct NcclUniqueId {
  std::array<char, 128> bytes{};
};
// ncclGetUniqueId. Throws tandem::Error with NCCL's message on failure.
NcclUniqueId make_nccl_unique_id();

class NcclCommunicator : public Communicator {
 public:
  // Binds the calling thread to `device`, creates a stream there (unless
  // given one) and joins
  // the clique (ncclCommInitRank). Every one of the `world_size` ranks must
  // call it, each from its own thread or process, or it blocks.
  // Sets NCCL_NVLS_ENABLE=0 unless the environment already sets it: NVLink
  // SHARP (multicast) needs fabric manager support that shared machines
  // often lack, and fails at init there.
  // Throws tandem::Error with the CUDA or NCCL message on failure.
  // `stream`: a cudaStream_t on `device` to queue on, owned by the caller
  // (several communicators of one rank then share its order); null: the
  // communicator creates and owns one.
  NcclCommunicator(const NcclUniqueId& id, int rank, int world_size, int device, void* stream = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int world_size() const override;
  int device() const;
  // The cudaStream_t its operations are queued on.
  void* stream() const;

  void all_reduce_sum(float* data, int64_t n) override;        // ncclAllReduce, ncclSum, in place
  void all_gather(const float* in, int64_t n, float* out) override;  // ncclAllGather
  void send(const float* data, int64_t n, int peer) override;  // ncclSend
  void recv(float* data, int64_t n, int peer) override;        // ncclRecv
  void synchronize() override;                                 // cudaStreamSynchronize
  // Memory from ncclMemAlloc that every rank registers as one symmetric
  // window (NCCL_WIN_COLL_SYMMETRIC): an all-reduce in place on it, at the
  // same offset on every rank, takes NCCL's symmetric kernels, which read
  // and write the peers' memory over NVLink directly. Allocated once, by
  // the first call (collective: every rank calls it, with the same size, at
  // the same point); later calls return it while `bytes` fits and null
  // otherwise (it does not grow: growing mid-run would be one more
  // collective that a failing rank could leave the others waiting in). The
  // ranks agree on the allocation before registering. Null (and null from
  // then on) where NCCL is older than 2.27, at build or at run time, or
  // refuses (e.g. no CUDA VMM support); shared_buffer_error() says why.
  float* shared_buffer(size_t bytes, const std::function<void()>& wait = {}) override;
  // Why shared_buffer gave null; empty before any refusal.
  std::string shared_buffer_error() const;
  // The shared buffer's ncclWindow_t, for kernels that reach the peers'
  // copies through NCCL's device API. Null while there is no buffer, and
  // where NCCL registered it without a symmetric window (NCCL_WIN_ENABLE=0,
  // NCCL_CUMEM_ENABLE=0, GPUs without peer access, several hosts): the
  // buffer then serves NCCL's all-reduce only.
  void* shared_window() const;
  // Why shared_window() is null (empty when it is not).
  std::string shared_window_error() const;
  // Whether every rank of the clique says yes: a min-reduction of one int,
  // waited for (with `wait` when given, else on the stream). Collective.
  bool agree(bool yes, const std::function<void()>& wait = {});
  // Deregisters the window and frees the buffer once this rank's queued
  // work is done; a later shared_buffer call allocates anew. Collective
  // too: every rank of the clique calls it at the same time (each from its
  // own thread). The destructor does not deregister (the ranks of a host
  // are torn down one after another); it leaves the window to
  // ncclCommDestroy and then frees the memory.
  void release_shared_buffer();
  // ncclCommAbort: queued operations of this rank that wait on a peer (one
  // that failed and will never join) end, and the communicator is unusable
  // afterwards. Idempotent. Call it from the thread that queues on this
  // communicator, between operations (it frees NCCL's state). Waits at
  // most 10 s: with a peer process on this host that died, NCCL's abort
  // can wait for it forever after ending the kernels. False when it did
  // not finish in time (it goes on, detached, and the destructor then
  // leaves the window and agree()'s flag unfreed).
  bool abort();
  // NCCL's asynchronous error (ncclCommGetAsyncError), e.g. a peer process
  // that died; empty while there is none.
  std::string async_error() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tandem::parallel
