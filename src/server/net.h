// Networking types the server's session files share (Boost.Asio/Beast,
// built with Boost 1.74 and 1.83), and the inbox that carries engine events
// onto a connection's strand.
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
#include <deque>
#include <memory>

#include "scheduler/engine_service.h"
#include "server/server_context.h"

namespace tandem::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using HttpRequest = http::request<http::string_body>;

// Engine events for one connection. The engine's delivery thread (EventDelivery) posts each
// event onto the connection's strand; the session coroutine (on the same
// strand) waits on `wait()`. Because the check for events and the start of
// the wait run in one strand handler, a wake-up is never lost.
class EventInbox {
 public:
  explicit EventInbox(asio::any_io_executor strand) : timer_(strand) {}

  // A callback for EngineService::submit; `index` tags the events (choice n).
  static EventCallback callback(const std::shared_ptr<EventInbox>& inbox, int index) {
    return [inbox, index](StreamEvent&& event) {
      asio::post(inbox->timer_.get_executor(), [inbox, index, ev = std::move(event)]() mutable {
        inbox->events.emplace_back(index, std::move(ev));
        inbox->timer_.cancel();
      });
    };
  }

  // Returns when an event is queued or wake() ran. Call on the strand.
  asio::awaitable<void> wait() {
    if (!events.empty() || woken_) {
      woken_ = false;
      co_return;
    }
    timer_.expires_at(asio::steady_timer::time_point::max());
    beast::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    woken_ = false;
  }
  // Call on the strand.
  void wake() {
    woken_ = true;
    timer_.cancel();
  }

  std::deque<std::pair<int, StreamEvent>> events;

 private:
  asio::steady_timer timer_;
  bool woken_ = false;
};

// Serves one TCP connection: HTTP/1.1 requests with keep-alive, and the
// upgrade to the WebSocket protocol at /ws.
asio::awaitable<void> run_http_session(std::shared_ptr<ServerContext> ctx, tcp::socket socket);
// Serves the WebSocket protocol (docs/PROTOCOL.md) after an upgrade request.
asio::awaitable<void> run_ws_session(std::shared_ptr<ServerContext> ctx, beast::tcp_stream stream, HttpRequest request);
// The OpenAI generation routes; returns whether the connection stays open.
asio::awaitable<bool> serve_generation(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& request,
                                       bool chat);

// Common response headers (server, CORS).
void set_common_headers(http::fields& fields);

}  // namespace tandem::server
