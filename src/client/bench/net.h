// Asio/Beast types the benchmark's network code shares (Boost 1.74 and later).
#pragma once

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <stdexcept>
#include <string>

namespace tandem::client::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

inline auto use_ec(beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

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
