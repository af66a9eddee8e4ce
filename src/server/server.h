// The network server: one port, HTTP (OpenAI API, health, metrics, status)
// and WebSocket (/ws), served by one io_context on a few threads.
#pragma once

#include <cstdint>
#include <memory>

#include "server/server_context.h"

namespace tandem::server {

class Server {
 public:
  // PRECONDITIONS: ctx->model.engine is set before run() and the engine is
  // destroyed before the Server (engine callbacks post into its io_context).
  explicit Server(std::shared_ptr<ServerContext> ctx);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0: any free port). Throws tandem::Error naming the
  // address when it cannot.
  void listen();
  // The bound port (after listen()).
  uint16_t port() const;
  // Serves until SIGTERM or SIGINT: then refuses new generations (503),
  // lets running streams finish, and returns. A second signal returns at once.
  void run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::server
