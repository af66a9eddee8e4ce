// Communicator for ranks that are threads of one process (host memory): the
// CPU simulation of tensor parallelism and the communicator's own tests.
// Sums run in rank order, so every rank gets the same bits.
#pragma once

#include <barrier>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace tandem::parallel {

// The shared state of `world_size` ranks. Outlives their communicators.
class InProcessGroup {
 public:
  explicit InProcessGroup(int world_size);
  int world_size() const { return world_size_; }
  // The communicator of `rank`, to be used by one thread.
  std::unique_ptr<Communicator> communicator(int rank);

 private:
  friend class InProcessCommunicator;
  int world_size_;
  std::barrier<> barrier_;
  std::vector<const float*> posted_;  // [world_size] each rank's buffer during a collective
  std::mutex mailbox_mutex_;
  std::condition_variable mailbox_cv_;
  std::map<std::pair<int, int>, std::deque<std::vector<float>>> mailboxes_;  // (from, to) -> messages
};

}  // namespace tandem::parallel
