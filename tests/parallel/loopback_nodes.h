// Helpers for tests of node links over loopback: a port nobody listens on
// now, and one node's config for a plan of `nnodes` meeting there.
#pragma once

#include <utility>  // before asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <chrono>
#include <fstream>
#include <random>

#include "parallel/node_link.h"

namespace tandem::parallel::testing_nodes {

// A free port below the kernel's ephemeral range (ip_local_port_range):
// every outgoing connection and every bind to port 0 of the other tests
// running beside this one draws from that range, so a port taken from it
// could be handed to one of them before the node binds it. Tests that run
// at once pick at random from about 20k ports, each checked free.
inline int free_port() {
  boost::asio::io_context io;
  const auto v4 = boost::asio::ip::tcp::v4();
  int ephemeral_low = 32768;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  if (range) range >> ephemeral_low;
  constexpr int kLowest = 10000;
  if (ephemeral_low > kLowest + 1000) {
    std::mt19937 gen(std::random_device{}());
    std::uniform_int_distribution<int> pick(kLowest, ephemeral_low - 1);
    for (int i = 0; i < 200; ++i) {
      const int port = pick(gen);
      boost::asio::ip::tcp::acceptor a(io);
      boost::system::error_code ec;
      a.open(v4, ec);
      if (!ec) a.bind({v4, static_cast<unsigned short>(port)}, ec);
      if (!ec) return port;
    }
  }
  boost::asio::ip::tcp::acceptor a(io, {v4, 0});
  return a.local_endpoint().port();
}

inline NodeConfig node(int rank, int nnodes, int port) {
  NodeConfig c;
  c.nnodes = nnodes;
  c.node_rank = rank;
  c.master_port = port;
  c.timeout = std::chrono::seconds(10);
  return c;
}

}  // namespace tandem::parallel::testing_nodes
