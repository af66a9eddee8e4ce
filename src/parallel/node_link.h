// The TCP links of a plan that spans several hosts ("nodes"). Node 0 runs the
// scheduler and the API and holds one socket to every other node; over it
// go the NCCL unique ids at start-up and, every step, the step plan (and the
// logits back, when the last pipeline stage lives on another node). The
// tensors themselves travel over NCCL. Messages are length-prefixed byte
// strings; a peer that closes or sends garbage ends the link with an error.
// A peer whose host stops answering (a crash, a cut network) closes
// nothing: the kernel's TCP keepalive probes and user timeout declare it
// lost after NodeConfig::dead_peer_after, and a node waiting on it gets the
// same error instead of waiting forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tandem::parallel {

// Where the nodes meet: --nnodes, --node-rank, --master-addr, --master-port
// (or, under mpirun, OMPI_COMM_WORLD_SIZE / OMPI_COMM_WORLD_RANK).
struct NodeConfig {
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 8770;
  std::chrono::seconds timeout{120};  // for every node to join
  // A link whose peer's host answers nothing (neither data nor keepalive
  // probes) for this long is lost; 0: wait forever.
  std::chrono::seconds dead_peer_after{30};
  // A node other than 0 that hears nothing from node 0 for this long (no
  // step and no idle heartbeat, which node 0's engine sends every quarter
  // of it) stops with an error: node 0's process hangs or was stopped
  // while its host still answers. 0: wait forever.
  std::chrono::seconds node0_silence{120};

  bool is_multi_node() const { return nnodes > 1; }
};

// Fills nnodes / node_rank from OpenMPI's environment when the flags left
// them unset (nnodes == 1) and mpirun started this process; true if it did.
bool apply_mpi_environment(NodeConfig& config);

// Throws tandem::Error naming the flag when a value is out of range.
void validate_node_config(const NodeConfig& config);

// What the kernel does about a silent peer on one link, read back from the
// socket: keepalive probes after idle_s seconds without traffic, every
// interval_s, `probes` unanswered ones and the link is lost; sent data
// unacknowledged for user_timeout_ms also loses it.
struct PeerWatch {
  bool keepalive = false;
  int idle_s = 0, interval_s = 0, probes = 0;
  unsigned user_timeout_ms = 0;
};

class NodeLink {
 public:
  // Node 0 listens on master_port and waits (up to `timeout`) until every
  // other node has connected and said its rank; other nodes connect to
  // master_addr:master_port, retrying until `timeout`. Throws tandem::Error
  // naming the address and what went wrong (refused, timed out, a node that
  // gave another nnodes or a rank taken twice).
  static std::unique_ptr<NodeLink> open(const NodeConfig& config);
  ~NodeLink();
  NodeLink(const NodeLink&) = delete;
  NodeLink& operator=(const NodeLink&) = delete;

  int node_rank() const;
  int nnodes() const;
  const NodeConfig& config() const;
  // Node 0 to `node` (1..nnodes-1), or another node to node 0 (node = 0).
  void send(int node, std::span<const uint8_t> message);
  // The next message from `node` (as for send). Blocks.
  std::vector<uint8_t> recv(int node);
  // The same, but nothing (nullopt) when no message starts to arrive within
  // `timeout`; one that has started is read to its end.
  std::optional<std::vector<uint8_t>> recv_for(int node, std::chrono::milliseconds timeout);
  // Why the link to `node` (as for send) has ended, read without taking
  // anything from it: "" while it is open, and while a message waits to be
  // read (its end is then heard after the message); else "node A lost node
  // B: " and the cause (the peer's process closed it, or the kernel declared
  // the peer's host lost). Does not block.
  std::string ended(int node);
  // The first `n` bytes of the next message from `node`, read without taking
  // them, when that much of it has arrived; else empty. Does not block.
  std::vector<uint8_t> peek(int node, size_t n);
  // Ends every link at once (both ways): later sends and receives fail, and
  // the peers hear the end as they would a process that ended.
  void shut_down();
  // How the link to `node` (as for send) watches for a dead peer.
  PeerWatch peer_watch(int node);

 private:
  struct State;
  explicit NodeLink(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// One step of the model as node 0's scheduler planned it: what every node's
// ranks need to run their part (the sequences' tokens, positions and block
// tables). `stop` ends the other nodes' loops; `heartbeat` carries no step
// and only says that node 0's engine is alive while it has nothing to run.
struct StepPlan {
  struct Chunk {
    std::vector<int32_t> tokens;
    int64_t n_tokens = 0;  // positions before the new tokens (SequenceKv::n_tokens)
    std::vector<int32_t> block_table;
    bool all_logits = false;
    int64_t prompt_len = 0;
  };
  std::vector<Chunk> chunks;
  bool stop = false;
  bool heartbeat = false;
};
std::vector<uint8_t> encode_step_plan(const StepPlan& plan);
// Throws tandem::Error on a truncated or malformed message.
StepPlan decode_step_plan(std::span<const uint8_t> message);

}  // namespace tandem::parallel
