#include "client/chat/chat_link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <csignal>

#include "client/net/net_error.h"

namespace tandem::client::chat {

using nlohmann::json;

ChatLink::ChatLink(net::BackendUrl url, net::InitOptions options)
    : url_(std::move(url)),
      options_(std::move(options)),
      ws_(io_.get_executor()),
      signals_(io_, SIGINT),
      backoff_timer_(io_) {
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw std::runtime_error("cannot create an eventfd");
  watch_signals();
  asio::co_spawn(io_, maintain(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

ChatLink::~ChatLink() {
  asio::post(io_, [this] {
    stopping_ = true;
    signals_.cancel();
    backoff_timer_.cancel();
    ws_.close();
  });
  thread_.join();
  close(event_fd_);
}

void ChatLink::watch_signals() {
  signals_.async_wait([this](const beast::error_code& ec, int) {
    if (ec || stopping_) return;
    push({LinkEvent::Kind::interrupt, nullptr, {}});
    watch_signals();
  });
}

void ChatLink::push(LinkEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (event.kind == LinkEvent::Kind::connected) connected_ = true;
    if (event.kind == LinkEvent::Kind::disconnected || event.kind == LinkEvent::Kind::fatal) connected_ = false;
    events_.push_back(std::move(event));
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof one);
}

bool ChatLink::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

bool ChatLink::send(const json& command) {
  if (!connected()) return false;
  asio::post(io_, [this, command] { ws_.send(command); });
  return true;
}

bool ChatLink::next(LinkEvent& out, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (!events_.empty()) {
        out = std::move(events_.front());
        events_.pop_front();
        if (events_.empty()) {
          uint64_t count;
          [[maybe_unused]] ssize_t n = read(event_fd_, &count, sizeof count);
        }
        return true;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{event_fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
  }
}

asio::awaitable<void> ChatLink::maintain() {
  auto backoff = std::chrono::milliseconds(500);
  while (!stopping_) {
    try {
      json ready = co_await ws_.connect(url_, options_, std::chrono::seconds(10));
      backoff = std::chrono::milliseconds(500);
      push({LinkEvent::Kind::connected, std::move(ready), {}});
      for (;;) {
        // (co_await kept out of a braced temporary: GCC 12 mishandles that.)
        json event = co_await ws_.read();
        push(LinkEvent{LinkEvent::Kind::message, std::move(event), {}});
      }
    } catch (const net::NetError& e) {
      if (stopping_) co_return;
      ws_.close();
      const std::string& code = e.code();
      if (code == "unauthorized" || code == "model_not_found" || code == "invalid_request") {
        push({LinkEvent::Kind::fatal, nullptr, e.what()});
        co_return;
      }
      push({LinkEvent::Kind::disconnected, {{"retry_in_ms", backoff.count()}}, e.what()});
    } catch (const std::exception& e) {
      // A malformed message from the backend: drop the connection, keep going.
      if (stopping_) co_return;
      ws_.close();
      push({LinkEvent::Kind::disconnected, {{"retry_in_ms", backoff.count()}},
            std::string("the backend sent something unreadable (") + e.what() + ")"});
    }
    backoff_timer_.expires_after(backoff);
    beast::error_code ec;
    co_await backoff_timer_.async_wait(net::use_ec(ec));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(8000));
  }
}

}  // namespace tandem::client::chat
