#include "parallel/step_watch.h"

#include "parallel/node_link.h"

namespace tandem::parallel {

StepWatch::StepWatch(NodeLink* link, std::chrono::milliseconds limit)
    : link_(link), limit_(limit), start_(std::chrono::steady_clock::now()) {}

std::string StepWatch::link_ended() const {
  if (link_ == nullptr) return "";
  const int self = link_->node_rank();
  for (int n = 0; n < link_->nnodes(); ++n) {
    if (n == self || (self != 0 && n != 0)) continue;
    std::string why = link_->ended(n);
    if (!why.empty()) return why + ", mid-step";
  }
  return "";
}

std::string StepWatch::check() const {
  std::string why = link_ended();
  if (!why.empty()) return why;
  if (limit_.count() > 0 && std::chrono::steady_clock::now() - start_ > limit_) {
    why = "a step ran past " + describe_limit(limit_);
    if (link_ != nullptr) {
      why += " (the larger of --node-silence-s and 30 s): a rank of this node or another hangs, or a node was "
             "stopped or died mid-step without NCCL noticing; node " +
             std::to_string(link_->node_rank()) + " gives the step up";
    }
    return why;
  }
  return "";
}

std::string describe_limit(std::chrono::milliseconds limit) {
  if (limit.count() % 1000 == 0) return std::to_string(limit.count() / 1000) + " s";
  return std::to_string(limit.count()) + " ms";
}

}  // namespace tandem::parallel
