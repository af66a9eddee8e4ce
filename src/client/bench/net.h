// Names the benchmark's network code shares: the client's Asio/Beast set
// (client/net/asio.h), its clock, and its two kinds of failure.
#pragma once

#include "client/net/asio.h"

#include <chrono>
#include <stdexcept>
#include <string>

namespace tandem::client::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using net::use_ec;
using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A failure before any request runs (backend unreachable, wrong API, bad
// key): the benchmark stops with this message.
class SetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A short code and a readable message for a network failure of a request.
struct NetFailure {
  std::string code;
  std::string message;
};
NetFailure classify_net_error(const beast::error_code& ec);

}  // namespace tandem::client::bench
