// Collective communication between the GPUs of a parallel plan: all-reduce
// for tensor parallelism, send/recv of activations between pipeline stages,
// all-gather for the vocabulary-split logits. One Communicator per rank; a
// plan uses one per tensor-parallel group and one across stages.
//
// Buffers live where the implementation's ranks compute: host memory for
// InProcessCommunicator (tests, the CPU simulation), device memory for
// NcclCommunicator (ops are queued on its stream; see nccl_communicator.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace tandem::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: data[i] becomes the sum of data[i] over all ranks, identical
  // on every rank. Every rank calls it with the same n.  data: [n]
  virtual void all_reduce_sum(float* data, int64_t n) = 0;
  // out[r * n + i] = rank r's in[i]. Every rank calls it with the same n.
  //   in: [n], out: [world_size * n]; they do not overlap.
  virtual void all_gather(const float* in, int64_t n, float* out) = 0;
  // Point to point, for pipeline stages: `peer` is a rank of this
  // communicator; a send to `peer` is matched by peer's recv from this rank,
  // in order.  data: [n]
  virtual void send(const float* data, int64_t n, int peer) = 0;
  virtual void recv(float* data, int64_t n, int peer) = 0;
  // Memory for the buffer that all_reduce_sum takes, shared with the other
  // ranks so that the collective reads and writes it directly (less latency
  // for small messages). Collective: every rank calls it with the same size
  // at the same point of its sequence of operations; `wait`, when given,
  // waits for this rank's queued work (the caller's abort-aware wait; else
  // the implementation blocks on its stream). Null where the communicator
  // has no such memory: use ordinary memory then.
  virtual float* shared_buffer(size_t bytes, const std::function<void()>& wait = {}) {
    (void)bytes;
    (void)wait;
    return nullptr;
  }
  // Waits until every operation this rank queued has finished. The
  // in-process communicator runs each at once; NCCL queues on a stream.
  virtual void synchronize() {}
};

}  // namespace tandem::parallel
