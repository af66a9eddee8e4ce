// A client for the WebSocket protocol (docs/PROTOCOL.md): connect, send
// `init`, then send commands and read events. Binary messages are zstd frames
// and come back decompressed. All calls run on the executor the client was
// made with; it is meant for a single-threaded io_context.
//
//   WsClient ws(io.get_executor());
//   json ready = co_await ws.connect(url, {.api_key = key}, 5s);
//   ws.send({{"command","generate"},{"id","r1"},{"messages",...}});
//   for (;;) { json ev = co_await ws.read(); ... }   // throws NetError when the socket ends
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "client/net/asio.h"
#include "client/net/url.h"

namespace tandem::client::net {

struct InitOptions {
  std::string api_key;  // empty: none sent
  std::string model;    // empty: none sent (the backend's own model)
  bool zstd = true;     // ask for zstd compression of large messages
};

class WsClient {
 public:
  explicit WsClient(asio::any_io_executor executor);
  ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // TCP connect, WebSocket handshake at url.ws_path, `init`, wait for `ready`
  // (returned). Throws NetError: a plain-words transport reason, or the
  // backend's error event (code() is e.g. "unauthorized", "model_not_found").
  // PRECONDITIONS: not connected (call close() first to reconnect).
  // (Arguments by value: a coroutine must not hold references to temporaries.)
  asio::awaitable<nlohmann::json> connect(BackendUrl url, InitOptions options, std::chrono::milliseconds timeout);

  // The next event. Throws NetError when the connection ends; the client is
  // then closed. One read at a time.
  asio::awaitable<nlohmann::json> read();

  // Queues a command; commands go out in order. Dropped when not connected.
  void send(const nlohmann::json& command);

  // Ends the connection (a pending read() throws; a connect() in progress
  // fails at once). Safe to call twice.
  void close();

  bool connected() const { return state_ != nullptr; }
  const BackendUrl& url() const { return url_; }

 private:
  struct State;
  static asio::awaitable<void> writer(std::shared_ptr<State> state);

  asio::any_io_executor executor_;
  BackendUrl url_;
  std::shared_ptr<State> state_;
  std::weak_ptr<State> connecting_;  // a connect() in progress, so close() can abort it
};

}  // namespace tandem::client::net
