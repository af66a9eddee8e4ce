// Helpers for tests of node links over loopback: a port nobody listens on
// now, and one node's config for a plan of `nnodes` meeting there.
#pragma once

#include <utility>  // before asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <chrono>

#include "parallel/node_link.h"

namespace tandem::parallel::testing_nodes {

inline int free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::tcp::v4(), 0});
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
