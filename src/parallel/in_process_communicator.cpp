#include "parallel/in_process_communicator.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace tandem::parallel {

class InProcessCommunicator : public Communicator {
 public:
  InProcessCommunicator(InProcessGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_.world_size_; }

  // Three phases: post the buffer; (barrier) read everyone's into a local
  // sum; (barrier) write it back. The second barrier keeps a rank from
  // overwriting its buffer while another still reads it.
  void all_reduce_sum(float* data, int64_t n) override {
    group_.posted_[static_cast<size_t>(rank_)] = data;
    group_.barrier_.arrive_and_wait();
    scratch_.assign(static_cast<size_t>(n), 0.0f);
    for (int r = 0; r < group_.world_size_; ++r) {
      const float* src = group_.posted_[static_cast<size_t>(r)];
      for (int64_t i = 0; i < n; ++i) scratch_[static_cast<size_t>(i)] += src[i];
    }
    group_.barrier_.arrive_and_wait();
    std::copy(scratch_.begin(), scratch_.end(), data);
  }

  void all_gather(const float* in, int64_t n, float* out) override {
    group_.posted_[static_cast<size_t>(rank_)] = in;
    group_.barrier_.arrive_and_wait();
    for (int r = 0; r < group_.world_size_; ++r)
      std::copy(group_.posted_[static_cast<size_t>(r)], group_.posted_[static_cast<size_t>(r)] + n, out + r * n);
    group_.barrier_.arrive_and_wait();
  }

  // Buffered: a send returns at once; recv waits for the matching message.
  void send(const float* data, int64_t n, int peer) override {
    check_peer(peer);
    {
      std::lock_guard<std::mutex> lock(group_.mailbox_mutex_);
      group_.mailboxes_[{rank_, peer}].emplace_back(data, data + n);
    }
    group_.mailbox_cv_.notify_all();
  }

  void recv(float* data, int64_t n, int peer) override {
    check_peer(peer);
    std::unique_lock<std::mutex> lock(group_.mailbox_mutex_);
    auto& box = group_.mailboxes_[{peer, rank_}];
    group_.mailbox_cv_.wait(lock, [&] { return !box.empty(); });
    std::vector<float> message = std::move(box.front());
    box.pop_front();
    lock.unlock();
    check(static_cast<int64_t>(message.size()) == n, "internal: rank " + std::to_string(rank_) + " expected " +
                                                         std::to_string(n) + " values from rank " +
                                                         std::to_string(peer) + ", got " +
                                                         std::to_string(message.size()));
    std::copy(message.begin(), message.end(), data);
  }

 private:
  void check_peer(int peer) const {
    check(peer >= 0 && peer < group_.world_size_ && peer != rank_,
          "internal: rank " + std::to_string(rank_) + " cannot talk to rank " + std::to_string(peer));
  }

  InProcessGroup& group_;
  int rank_;
  std::vector<float> scratch_;
};

InProcessGroup::InProcessGroup(int world_size)
    : world_size_(world_size), barrier_(world_size), posted_(static_cast<size_t>(world_size), nullptr) {
  check(world_size >= 1, "internal: a communicator group needs at least one rank");
}

std::unique_ptr<Communicator> InProcessGroup::communicator(int rank) {
  check(rank >= 0 && rank < world_size_, "internal: rank " + std::to_string(rank) + " outside a group of " +
                                             std::to_string(world_size_));
  return std::make_unique<InProcessCommunicator>(*this, rank);
}

}  // namespace tandem::parallel
