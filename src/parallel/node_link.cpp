#include "parallel/node_link.h"

#include <utility>  // before asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <optional>
#include <thread>
#include <type_traits>

#include "common/error.h"

namespace tandem::parallel {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr char kMagic[8] = {'T', 'A', 'N', 'D', 'E', 'M', 'N', '1'};
// 64 GiB: a step's plan is small; its logits are rows x vocab x 4 bytes
// (a 16k-token prompt with every row's logits over a 128k vocabulary is 8 GB).
constexpr uint64_t kMaxMessage = uint64_t{1} << 36;
// A step plan's first byte.
constexpr uint8_t kStep = 0, kStop = 1, kHeartbeat = 2;

// Little-endian fixed-width fields, as every supported host is.
template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> data) : data_(data) {}
  template <typename T>
  T get() {
    check(pos_ + sizeof(T) <= data_.size(), "step plan message is truncated");
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::vector<int32_t> ints() {
    const uint64_t n = get<uint64_t>();
    check(n <= (data_.size() - pos_) / 4, "step plan message is truncated");
    std::vector<int32_t> v(static_cast<size_t>(n));
    std::memcpy(v.data(), data_.data() + pos_, n * 4);
    pos_ += n * 4;
    return v;
  }
  bool done() const { return pos_ == data_.size(); }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

void put_ints(std::vector<uint8_t>& out, const std::vector<int32_t>& v) {
  put<uint64_t>(out, v.size());
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  out.insert(out.end(), p, p + v.size() * 4);
}

std::string where(const NodeConfig& c) { return c.master_addr + ":" + std::to_string(c.master_port); }

// Keepalive probes after a third of `after` without traffic, every sixth,
// three unanswered and the link is lost (at most after / 3 + 3 * after / 6
// <= after); sent data unacknowledged for `after` loses it too.
void watch_peer(tcp::socket& s, std::chrono::seconds after) {
  const int seconds = static_cast<int>(after.count());
  if (seconds <= 0) return;
  const int fd = s.native_handle();
  const int on = 1, idle = std::max(1, seconds / 3), interval = std::max(1, seconds / 6), probes = 3;
  const unsigned user_timeout_ms = static_cast<unsigned>(seconds) * 1000u;
  auto set = [&](int level, int name, const void* value, socklen_t size, const char* what) {
    check(::setsockopt(fd, level, name, value, size) == 0,
          std::string("cannot set ") + what + " on a node link: " + std::strerror(errno));
  };
  set(SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on, "SO_KEEPALIVE");
  set(IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle, "TCP_KEEPIDLE");
  set(IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval, "TCP_KEEPINTVL");
  set(IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes, "TCP_KEEPCNT");
  set(IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms, "TCP_USER_TIMEOUT");
}

}  // namespace

bool apply_mpi_environment(NodeConfig& config) {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (config.nnodes != 1 || size == nullptr || rank == nullptr) return false;
  try {
    config.nnodes = std::stoi(size);
    config.node_rank = std::stoi(rank);
  } catch (const std::exception&) {
    throw Error("OMPI_COMM_WORLD_SIZE / OMPI_COMM_WORLD_RANK are not numbers ('" + std::string(size) + "', '" +
                std::string(rank) + "')");
  }
  return true;
}

void validate_node_config(const NodeConfig& c) {
  check(c.nnodes >= 1 && c.nnodes <= 1024, "--nnodes must be in [1, 1024], got " + std::to_string(c.nnodes));
  check(c.node_rank >= 0 && c.node_rank < c.nnodes, "--node-rank must be in [0, nnodes - 1 = " +
                                                        std::to_string(c.nnodes - 1) + "], got " +
                                                        std::to_string(c.node_rank));
  check(c.master_port > 0 && c.master_port < 65536, "--master-port must be in [1, 65535], got " +
                                                        std::to_string(c.master_port));
  check(!c.master_addr.empty(), "--master-addr must name node 0's host");
  check(c.dead_peer_after.count() >= 0 && c.dead_peer_after.count() <= 86400,
        "the dead-peer time must be in [0, 86400] s, got " + std::to_string(c.dead_peer_after.count()));
  check(c.node0_silence.count() == 0 || (c.node0_silence.count() >= 4 && c.node0_silence.count() <= 86400),
        "--node-silence-s must be 0 (wait forever) or in [4, 86400], got " + std::to_string(c.node0_silence.count()));
}

struct NodeLink::State {
  NodeConfig config;
  asio::io_context io;
  std::vector<std::optional<tcp::socket>> peers;  // node 0: by node rank; others: [0] = node 0
  tcp::socket& peer(int node) {
    const size_t i = static_cast<size_t>(config.node_rank == 0 ? node : 0);
    check((config.node_rank == 0 ? node >= 1 && node < config.nnodes : node == 0) && peers[i].has_value(),
          "internal: node " + std::to_string(config.node_rank) + " has no link to node " + std::to_string(node));
    return *peers[i];
  }
};

NodeLink::NodeLink(std::unique_ptr<State> state) : state_(std::move(state)) {}
NodeLink::~NodeLink() = default;
int NodeLink::node_rank() const { return state_->config.node_rank; }
int NodeLink::nnodes() const { return state_->config.nnodes; }
const NodeConfig& NodeLink::config() const { return state_->config; }

std::unique_ptr<NodeLink> NodeLink::open(const NodeConfig& config) {
  validate_node_config(config);
  auto st = std::make_unique<State>();
  st->config = config;
  const auto deadline = std::chrono::steady_clock::now() + config.timeout;
  auto hello = [&](int rank) {
    std::vector<uint8_t> m(kMagic, kMagic + sizeof kMagic);
    put<int32_t>(m, rank);
    put<int32_t>(m, config.nnodes);
    return m;
  };
  if (config.node_rank == 0) {
    st->peers.resize(static_cast<size_t>(config.nnodes));
    tcp::acceptor acceptor(st->io);
    boost::system::error_code ec;
    const tcp::endpoint endpoint(tcp::v4(), static_cast<unsigned short>(config.master_port));
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    check(!ec, "node 0 cannot listen on port " + std::to_string(config.master_port) + ": " + ec.message() +
                   " (--master-port)");
    int joined = 1;
    while (joined < config.nnodes) {
      std::optional<tcp::socket> socket;
      acceptor.async_accept([&](const boost::system::error_code& e, tcp::socket s) {
        if (!e) socket.emplace(std::move(s));
      });
      st->io.restart();
      st->io.run_until(deadline);
      if (!socket) {
        acceptor.cancel();
        st->io.restart();
        st->io.poll();
        throw Error("node 0 waited " + std::to_string(config.timeout.count()) + " s on port " +
                    std::to_string(config.master_port) + ", and only " + std::to_string(joined) + " of " +
                    std::to_string(config.nnodes) + " nodes joined");
      }
      socket->set_option(tcp::no_delay(true));
      // The hello, within the deadline: a connection that says nothing (a
      // port scan, a health check) is dropped, not waited on forever.
      std::vector<uint8_t> h(sizeof kMagic + 8);
      bool read_ok = false;
      asio::async_read(*socket, asio::buffer(h), [&](const boost::system::error_code& e, size_t) { read_ok = !e; });
      st->io.restart();
      st->io.run_until(std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(2)));
      if (!read_ok) {
        st->io.restart();
        st->io.poll();  // a hello that completed at the limit still counts
      }
      if (!read_ok) {
        socket->close(ec);
        st->io.restart();
        st->io.poll();
        continue;
      }
      if (std::memcmp(h.data(), kMagic, sizeof kMagic) != 0) continue;  // not a Tandem node: ignore it
      int32_t rank = 0, nnodes = 0;
      std::memcpy(&rank, h.data() + 8, 4);
      std::memcpy(&nnodes, h.data() + 12, 4);
      check(nnodes == config.nnodes, "a node says --nnodes " + std::to_string(nnodes) + ", node 0 says " +
                                         std::to_string(config.nnodes));
      check(rank >= 1 && rank < config.nnodes, "a node says --node-rank " + std::to_string(rank) +
                                                   ", outside 1.." + std::to_string(config.nnodes - 1));
      check(!st->peers[static_cast<size_t>(rank)], "two nodes say --node-rank " + std::to_string(rank));
      watch_peer(*socket, config.dead_peer_after);
      st->peers[static_cast<size_t>(rank)] = std::move(socket);
      ++joined;
    }
  } else {
    st->peers.resize(1);
    tcp::resolver resolver(st->io);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(config.master_addr, std::to_string(config.master_port), ec);
    check(!ec, "cannot resolve --master-addr " + config.master_addr + ": " + ec.message());
    for (;;) {
      tcp::socket socket(st->io);
      asio::connect(socket, endpoints, ec);
      if (!ec) {
        socket.set_option(tcp::no_delay(true));
        asio::write(socket, asio::buffer(hello(config.node_rank)), ec);
        check(!ec, "node " + std::to_string(config.node_rank) + " lost node 0 at " + where(config) + ": " +
                       ec.message());
        watch_peer(socket, config.dead_peer_after);
        st->peers[0].emplace(std::move(socket));
        break;
      }
      check(std::chrono::steady_clock::now() < deadline,
            "node " + std::to_string(config.node_rank) + " could not reach node 0 at " + where(config) + " within " +
                std::to_string(config.timeout.count()) + " s: " + ec.message());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  return std::unique_ptr<NodeLink>(new NodeLink(std::move(st)));
}

void NodeLink::send(int node, std::span<const uint8_t> message) {
  tcp::socket& s = state_->peer(node);
  const uint64_t n = message.size();
  check(n <= kMaxMessage, "a message of " + std::to_string(n) + " bytes to node " + std::to_string(node) +
                              " exceeds the link's limit of " + std::to_string(kMaxMessage) + " bytes");
  boost::system::error_code ec;
  const std::array<asio::const_buffer, 2> parts{asio::buffer(&n, sizeof n), asio::buffer(message.data(), n)};
  asio::write(s, parts, ec);
  check(!ec, "node " + std::to_string(node_rank()) + " lost node " + std::to_string(node) + ": " + ec.message());
}

std::vector<uint8_t> NodeLink::recv(int node) {
  tcp::socket& s = state_->peer(node);
  uint64_t n = 0;
  boost::system::error_code ec;
  asio::read(s, asio::buffer(&n, sizeof n), ec);
  check(!ec, "node " + std::to_string(node_rank()) + " lost node " + std::to_string(node) + ": " + ec.message());
  check(n <= kMaxMessage, "node " + std::to_string(node) + " sent a message of " + std::to_string(n) +
                              " bytes, over the link's limit; is it a Tandem node of this version?");
  std::vector<uint8_t> m(static_cast<size_t>(n));
  asio::read(s, asio::buffer(m), ec);
  check(!ec, "node " + std::to_string(node_rank()) + " lost node " + std::to_string(node) + ": " + ec.message());
  return m;
}

std::optional<std::vector<uint8_t>> NodeLink::recv_for(int node, std::chrono::milliseconds timeout) {
  pollfd p{state_->peer(node).native_handle(), POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const int ready = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    const int error = errno;
    if (ready > 0) return recv(node);  // data, or an end that recv reports
    if (ready == 0 && std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    if (ready < 0 && error != EINTR) {
      throw Error("node " + std::to_string(node_rank()) + " cannot wait on node " + std::to_string(node) + ": " +
                  std::strerror(error));
    }
  }
}

std::string NodeLink::ended(int node) {
  const int fd = state_->peer(node).native_handle();
  uint8_t byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const int error = errno;
  if (n > 0 || (n < 0 && (error == EAGAIN || error == EWOULDBLOCK || error == EINTR))) return "";
  const std::string lost = "node " + std::to_string(node_rank()) + " lost node " + std::to_string(node) + ": ";
  return lost + (n == 0 ? "it closed the link (its process ended)"
                        : std::string(std::strerror(error)) + " (its process or its host ended)");
}

std::vector<uint8_t> NodeLink::peek(int node, size_t n) {
  const int fd = state_->peer(node).native_handle();
  std::vector<uint8_t> head(sizeof(uint64_t) + n);  // the length prefix, then the message
  const ssize_t got = ::recv(fd, head.data(), head.size(), MSG_PEEK | MSG_DONTWAIT);
  if (got < static_cast<ssize_t>(head.size())) return {};
  return std::vector<uint8_t>(head.begin() + sizeof(uint64_t), head.end());
}

void NodeLink::shut_down() {
  for (std::optional<tcp::socket>& s : state_->peers) {
    if (!s) continue;
    boost::system::error_code ec;
    s->shutdown(tcp::socket::shutdown_both, ec);  // a link already gone stays so
  }
}

PeerWatch NodeLink::peer_watch(int node) {
  const int fd = state_->peer(node).native_handle();
  PeerWatch w;
  auto get = [&](int level, int name, auto& value) {
    int v = 0;
    socklen_t size = sizeof v;
    check(::getsockopt(fd, level, name, &v, &size) == 0,
          std::string("cannot read a node link's socket options: ") + std::strerror(errno));
    value = static_cast<std::remove_reference_t<decltype(value)>>(v);
  };
  int keepalive = 0;
  get(SOL_SOCKET, SO_KEEPALIVE, keepalive);
  w.keepalive = keepalive != 0;
  get(IPPROTO_TCP, TCP_KEEPIDLE, w.idle_s);
  get(IPPROTO_TCP, TCP_KEEPINTVL, w.interval_s);
  get(IPPROTO_TCP, TCP_KEEPCNT, w.probes);
  get(IPPROTO_TCP, TCP_USER_TIMEOUT, w.user_timeout_ms);
  return w;
}

std::vector<uint8_t> encode_step_plan(const StepPlan& plan) {
  std::vector<uint8_t> out;
  put<uint8_t>(out, plan.stop ? kStop : plan.heartbeat ? kHeartbeat : kStep);
  put<uint64_t>(out, plan.chunks.size());
  for (const StepPlan::Chunk& c : plan.chunks) {
    put_ints(out, c.tokens);
    put<int64_t>(out, c.n_tokens);
    put_ints(out, c.block_table);
    put<uint8_t>(out, c.all_logits ? 1 : 0);
    put<int64_t>(out, c.prompt_len);
  }
  return out;
}

StepPlan decode_step_plan(std::span<const uint8_t> message) {
  Reader r(message);
  StepPlan plan;
  const uint8_t kind = r.get<uint8_t>();
  check(kind == kStep || kind == kStop || kind == kHeartbeat,
        "step plan message is malformed (kind " + std::to_string(kind) + ")");
  plan.stop = kind == kStop;
  plan.heartbeat = kind == kHeartbeat;
  const uint64_t n = r.get<uint64_t>();
  check(n <= message.size(), "step plan message is malformed (" + std::to_string(n) + " chunks)");
  for (uint64_t i = 0; i < n; ++i) {
    StepPlan::Chunk c;
    c.tokens = r.ints();
    c.n_tokens = r.get<int64_t>();
    c.block_table = r.ints();
    c.all_logits = r.get<uint8_t>() != 0;
    c.prompt_len = r.get<int64_t>();
    check(c.n_tokens >= 0 && !c.tokens.empty(), "step plan message is malformed (chunk " + std::to_string(i) + ")");
    plan.chunks.push_back(std::move(c));
  }
  check(r.done(), "step plan message has trailing bytes");
  return plan;
}

}  // namespace tandem::parallel
