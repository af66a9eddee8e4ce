// What a node watches while its GPU ranks run one step: how long the step
// has run, and the links to the nodes whose ranks its own wait on. A rank in
// an NCCL collective waits for its peers; a peer whose process hangs (or is
// stopped) keeps it waiting for good, and one whose process died is
// reported only where NCCL's transport notices. The runner asks check()
// while it waits for its ranks and gives the step up (aborting its
// communicators) when it says why.
#pragma once

#include <chrono>
#include <string>

namespace tandem::parallel {

class NodeLink;

class StepWatch {
 public:
  // `link`: this node's links to the others (null on one host). `limit`:
  // how long a step may run (0: no limit). The clock starts now.
  StepWatch(NodeLink* link, std::chrono::milliseconds limit);

  // "" while the step may go on; else why this node gives it up: a link
  // that ended (link_ended()), or the limit passed.
  std::string check() const;
  // Why a link this node watches has ended, or "": node 0 watches every
  // other node, the others node 0 (a message waiting to be read is not an
  // end; NodeLink::ended).
  std::string link_ended() const;

 private:
  NodeLink* link_;
  std::chrono::milliseconds limit_;
  std::chrono::steady_clock::time_point start_;
};

// "120 s", or "250 ms" for a limit that is not whole seconds.
std::string describe_limit(std::chrono::milliseconds limit);

}  // namespace tandem::parallel
