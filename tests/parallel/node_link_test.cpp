// NodeLink over loopback: nodes meet, messages pass both ways, mistakes in
// the launch (a node that never comes, another nnodes, nobody at the
// address) end with errors that say so; and the step plan's encoding.
#include "parallel/node_link.h"

#include <gtest/gtest.h>

#include <utility>  // before asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

#include "common/error.h"
#include "tests/parallel/loopback_nodes.h"

namespace tandem::parallel {
namespace {

using testing_nodes::free_port;
using testing_nodes::node;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(NodeLink, ThreeNodesMeetAndTalkBothWays) {
  const int port = free_port();
  std::vector<std::future<std::vector<uint8_t>>> others;
  for (int r = 1; r <= 2; ++r) {
    others.push_back(std::async(std::launch::async, [r, port] {
      auto link = NodeLink::open(node(r, 3, port));
      EXPECT_EQ(link->node_rank(), r);
      std::vector<uint8_t> got = link->recv(0);
      got.push_back(static_cast<uint8_t>(r));
      link->send(0, got);
      return link->recv(0);
    }));
  }
  auto link = NodeLink::open(node(0, 3, port));
  EXPECT_EQ(link->nnodes(), 3);
  for (int r = 1; r <= 2; ++r) link->send(r, std::vector<uint8_t>{7, 8});
  for (int r = 1; r <= 2; ++r) EXPECT_EQ(link->recv(r), (std::vector<uint8_t>{7, 8, static_cast<uint8_t>(r)}));
  std::vector<uint8_t> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31);
  for (int r = 1; r <= 2; ++r) link->send(r, big);
  for (auto& f : others) EXPECT_EQ(f.get(), big);
}

// A connection that never says hello (a port scan) is dropped after 2 s;
// the real node behind it still joins.
TEST(NodeLink, ASilentConnectionDoesNotBlockTheOthers) {
  const int port = free_port();
  boost::asio::io_context io;
  auto silent = std::async(std::launch::async, [&] {
    boost::asio::ip::tcp::socket s(io);
    for (int i = 0; i < 100; ++i) {
      boost::system::error_code ec;
      s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
      if (!ec) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::seconds(4));  // say nothing, stay open
  });
  auto other = std::async(std::launch::async, [port] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // after the silent one
    auto link = NodeLink::open(node(1, 2, port));
    link->send(0, std::vector<uint8_t>{42});
  });
  auto link = NodeLink::open(node(0, 2, port));
  EXPECT_EQ(link->recv(1), std::vector<uint8_t>{42});
  other.get();
  silent.get();
}

TEST(NodeLink, NodeZeroGivesUpWhenANodeNeverComes) {
  NodeConfig c = node(0, 2, free_port());
  c.timeout = std::chrono::seconds(1);
  EXPECT_NE(error_of([&] { NodeLink::open(c); }).find("only 1 of 2 nodes joined"), std::string::npos);
}

TEST(NodeLink, AnotherNodeGivesUpWhenNodeZeroIsNotThere) {
  NodeConfig c = node(1, 2, free_port());
  c.timeout = std::chrono::seconds(1);
  EXPECT_NE(error_of([&] { NodeLink::open(c); }).find("could not reach node 0 at 127.0.0.1:"), std::string::npos);
}

TEST(NodeLink, NodesThatDisagreeOnNnodesAreRefused) {
  const int port = free_port();
  auto other = std::async(std::launch::async, [port] {
    try {
      NodeLink::open(node(1, 3, port));
    } catch (const Error&) {
    }
  });
  EXPECT_NE(error_of([&] { NodeLink::open(node(0, 2, port)); }).find("a node says --nnodes 3, node 0 says 2"),
            std::string::npos);
  other.get();
}

TEST(NodeLink, ALostPeerIsAnError) {
  const int port = free_port();
  auto other = std::async(std::launch::async, [port] { NodeLink::open(node(1, 2, port)); });  // closes at once
  auto link = NodeLink::open(node(0, 2, port));
  other.get();
  EXPECT_NE(error_of([&] { link->recv(1); }).find("node 0 lost node 1"), std::string::npos);
}

// Both ends of a link ask the kernel to declare a silent peer lost after
// dead_peer_after: keepalive probes and a user timeout (a host that
// crashes or a cut network closes nothing, so no error would come
// otherwise). 0 leaves the sockets as they are.
TEST(NodeLink, BothEndsWatchForADeadPeer) {
  for (const int after : {30, 0}) {
    const int port = free_port();
    auto other = std::async(std::launch::async, [port, after] {
      NodeConfig c = node(1, 2, port);
      c.dead_peer_after = std::chrono::seconds(after);
      auto link = NodeLink::open(c);
      const PeerWatch w = link->peer_watch(0);
      link->recv(0);  // node 0 has read its own side
      return w;
    });
    NodeConfig c = node(0, 2, port);
    c.dead_peer_after = std::chrono::seconds(after);
    auto link = NodeLink::open(c);
    const PeerWatch mine = link->peer_watch(1);
    link->send(1, std::vector<uint8_t>{1});
    const PeerWatch theirs = other.get();
    for (const PeerWatch& w : {mine, theirs}) {
      EXPECT_EQ(w.keepalive, after > 0);
      if (after > 0) {
        EXPECT_EQ(w.idle_s, 10);
        EXPECT_EQ(w.interval_s, 5);
        EXPECT_EQ(w.probes, 3);
        EXPECT_EQ(w.user_timeout_ms, 30000u);
        EXPECT_LE(w.idle_s + w.probes * w.interval_s, after);
      } else {
        EXPECT_EQ(w.user_timeout_ms, 0u);
      }
    }
  }
  NodeConfig bad;
  bad.dead_peer_after = std::chrono::seconds(-1);
  EXPECT_NE(error_of([&] { validate_node_config(bad); }).find("dead-peer time"), std::string::npos);
}

TEST(NodeConfig, RangesAndMpiEnvironment) {
  NodeConfig c;
  c.nnodes = 2;
  c.node_rank = 2;
  EXPECT_NE(error_of([&] { validate_node_config(c); }).find("--node-rank must be in [0, nnodes - 1 = 1]"),
            std::string::npos);
  c.node_rank = 1;
  c.master_port = 0;
  EXPECT_NE(error_of([&] { validate_node_config(c); }).find("--master-port"), std::string::npos);

  NodeConfig m;
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  EXPECT_TRUE(apply_mpi_environment(m));
  EXPECT_EQ(m.nnodes, 4);
  EXPECT_EQ(m.node_rank, 3);
  NodeConfig given;
  given.nnodes = 2;  // flags win
  EXPECT_FALSE(apply_mpi_environment(given));
  EXPECT_EQ(given.nnodes, 2);
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("OMPI_COMM_WORLD_RANK");
}

TEST(StepPlan, RoundTripsAndRefusesDamage) {
  StepPlan p;
  p.chunks.push_back({{1, 2, 3}, 17, {4, 9}, true, 12});
  p.chunks.push_back({{42}, 0, {}, false, std::numeric_limits<int64_t>::max()});
  const std::vector<uint8_t> bytes = encode_step_plan(p);
  const StepPlan q = decode_step_plan(bytes);
  ASSERT_EQ(q.chunks.size(), 2u);
  EXPECT_FALSE(q.stop);
  EXPECT_EQ(q.chunks[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(q.chunks[0].n_tokens, 17);
  EXPECT_EQ(q.chunks[0].block_table, (std::vector<int32_t>{4, 9}));
  EXPECT_TRUE(q.chunks[0].all_logits);
  EXPECT_EQ(q.chunks[0].prompt_len, 12);
  EXPECT_EQ(q.chunks[1].prompt_len, std::numeric_limits<int64_t>::max());
  StepPlan stop;
  stop.stop = true;
  EXPECT_TRUE(decode_step_plan(encode_step_plan(stop)).stop);

  for (size_t cut : {size_t{0}, size_t{5}, bytes.size() - 1})
    EXPECT_NE(error_of([&] { decode_step_plan(std::span<const uint8_t>(bytes.data(), cut)); }).find("truncated"),
              std::string::npos)
        << cut;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_NE(error_of([&] { decode_step_plan(longer); }).find("trailing"), std::string::npos);

  StepPlan beat;
  beat.heartbeat = true;
  const StepPlan b = decode_step_plan(encode_step_plan(beat));
  EXPECT_TRUE(b.heartbeat);
  EXPECT_FALSE(b.stop);
  EXPECT_TRUE(b.chunks.empty());
  EXPECT_FALSE(q.heartbeat);
  std::vector<uint8_t> unknown = bytes;
  unknown[0] = 9;
  EXPECT_NE(error_of([&] { decode_step_plan(unknown); }).find("kind 9"), std::string::npos);
}

// recv_for: nothing within the time is nullopt (the link stays usable), a
// message that comes in time is returned whole, a peer that closes is an
// error as for recv.
TEST(NodeLink, ReceiveWithinATime) {
  const int port = free_port();
  std::promise<void> first_timed_out, close_now;
  auto other = std::async(std::launch::async, [&, port] {
    auto link = NodeLink::open(node(1, 2, port));
    first_timed_out.get_future().wait();
    std::vector<uint8_t> big(1 << 20, 5);
    link->send(0, big);
    close_now.get_future().wait();
  });
  auto link = NodeLink::open(node(0, 2, port));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(link->recv_for(1, std::chrono::milliseconds(200)).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  first_timed_out.set_value();
  const std::optional<std::vector<uint8_t>> got = link->recv_for(1, std::chrono::seconds(10));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, std::vector<uint8_t>(1 << 20, 5));
  close_now.set_value();
  other.get();
  EXPECT_NE(error_of([&] { link->recv_for(1, std::chrono::seconds(10)); }).find("node 0 lost node 1"),
            std::string::npos);
}

TEST(NodeConfig, NodeZeroSilenceRange) {
  NodeConfig c;
  EXPECT_EQ(c.node0_silence, std::chrono::seconds(120));
  c.node0_silence = std::chrono::seconds(0);  // wait forever
  validate_node_config(c);
  c.node0_silence = std::chrono::seconds(3);  // heartbeats every 0.75 s would crowd the engine's 1 s idle tick
  EXPECT_NE(error_of([&] { validate_node_config(c); }).find("--node-silence-s"), std::string::npos);
}

}  // namespace
}  // namespace tandem::parallel
