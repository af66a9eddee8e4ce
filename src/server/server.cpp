#include "server/server.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <thread>

#include "server/net.h"

namespace tandem::server {

struct Server::Impl {
  std::shared_ptr<ServerContext> ctx;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  asio::signal_set signals{ioc, SIGINT, SIGTERM};
  asio::steady_timer drain_timer{ioc};
  std::vector<std::thread> threads;
  bool stopped_while_loading = false;  // written on an io thread, read after join

  asio::awaitable<void> accept_loop() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::make_strand(ioc), asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // Out of descriptors and the like: back off instead of spinning.
        ctx->log->warn("accept failed: {}", ec.message());
        asio::steady_timer pause(ioc, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      auto executor = socket.get_executor();
      asio::co_spawn(executor, run_http_session(ctx, std::move(socket)), asio::detached);
    }
  }

  void wait_signal() {
    signals.async_wait([this](beast::error_code ec, int sig) {
      if (ec) return;
      if (!ctx->ready.load(std::memory_order_acquire)) {
        ctx->log->info("signal {} while loading: stopping", sig);
        stopped_while_loading = true;
        ctx->draining = true;
        ioc.stop();
        return;
      }
      if (ctx->draining) {
        ctx->log->warn("second signal: stopping now");
        ioc.stop();
        return;
      }
      ctx->log->info("signal {}: draining (no new requests; running streams finish)", sig);
      ctx->draining = true;
      ctx->model.engine->begin_drain();
      wait_signal();
      poll_drained();
    });
  }

  void poll_drained() {
    drain_timer.expires_after(std::chrono::milliseconds(50));
    drain_timer.async_wait([this](beast::error_code ec) {
      if (ec) return;
      if (ctx->model.engine->idle() && ctx->counters.active_generations.load() == 0 &&
          ctx->counters.ws_unsent.load() == 0) {
        ctx->log->info("drained; exiting");
        ioc.stop();
        return;
      }
      poll_drained();
    });
  }
};

Server::Server(std::shared_ptr<ServerContext> ctx) : impl_(std::make_unique<Impl>()) { impl_->ctx = std::move(ctx); }

Server::~Server() {
  // An error while loading leaves the threads running: stop them here.
  impl_->ioc.stop();
  for (std::thread& t : impl_->threads)
    if (t.joinable()) t.join();
}

void Server::listen() {
  const ServerContext& ctx = *impl_->ctx;
  const std::string where = ctx.config.host + ":" + std::to_string(ctx.config.port);
  beast::error_code ec;
  const asio::ip::address address = asio::ip::make_address(ctx.config.host, ec);
  check(!ec, "config key 'host': '" + ctx.config.host + "' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(ctx.config.port));
  tcp::acceptor& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  check(!ec, "cannot listen on " + where + ": " + ec.message());
}

uint16_t Server::port() const { return impl_->acceptor.local_endpoint().port(); }

void Server::start() {
  Impl& s = *impl_;
  s.wait_signal();
  asio::co_spawn(s.ioc, s.accept_loop(), asio::detached);
  for (int i = 0; i < s.ctx->config.http_threads; ++i) s.threads.emplace_back([&s] { s.ioc.run(); });
}

bool Server::wait() {
  Impl& s = *impl_;
  for (std::thread& t : s.threads) t.join();
  s.threads.clear();
  beast::error_code ec;
  s.acceptor.close(ec);
  return s.stopped_while_loading;
}

}  // namespace tandem::server
