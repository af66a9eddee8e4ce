// The chat's connection to its backend, kept alive on a background thread:
// it connects, reads events, and when the socket drops it reconnects with
// backoff (0.5 s doubling to 8 s). The terminal thread sees everything as
// LinkEvents, including Ctrl-C (SIGINT is caught here, so a Ctrl-C never ends
// the process by itself; the terminal decides what it means).
#pragma once

#include <chrono>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "client/net/asio.h"
#include "client/net/url.h"
#include "client/net/ws_client.h"

namespace tandem::client::chat {

namespace asio = net::asio;
namespace beast = net::beast;

struct LinkEvent {
  enum class Kind {
    connected,     // `message` is the backend's ready event
    disconnected,  // `text` says why (a connect attempt failed, or the socket dropped); retrying
    fatal,         // retrying cannot help (`text`: e.g. the API key was refused); the link stopped
    message,       // `message` is an event from the backend
    interrupt,     // Ctrl-C
  };
  Kind kind;
  nlohmann::json message;
  std::string text;
};

class ChatLink {
 public:
  ChatLink(net::BackendUrl url, net::InitOptions options);
  ~ChatLink();  // stops the thread and closes the socket
  ChatLink(const ChatLink&) = delete;
  ChatLink& operator=(const ChatLink&) = delete;

  // Sends a command if connected; returns false (nothing sent) otherwise.
  bool send(const nlohmann::json& command);

  // A file descriptor that is readable while events are queued (for poll()
  // alongside stdin).
  int ready_fd() const { return event_fd_; }
  // Takes the next event if one is queued within `timeout`.
  bool next(LinkEvent& out, std::chrono::milliseconds timeout);

  bool connected() const;
  const net::BackendUrl& url() const { return url_; }

 private:
  asio::awaitable<void> maintain();
  void watch_signals();
  void push(LinkEvent event);

  net::BackendUrl url_;
  net::InitOptions options_;
  asio::io_context io_;
  net::WsClient ws_;
  asio::signal_set signals_;
  asio::steady_timer backoff_timer_;
  bool stopping_ = false;  // io thread only

  mutable std::mutex mutex_;
  std::deque<LinkEvent> events_;
  bool connected_ = false;
  int event_fd_ = -1;
  std::thread thread_;
};

}  // namespace tandem::client::chat
