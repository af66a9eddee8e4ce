// The network server: one port, HTTP (OpenAI API, health, metrics, status)
// and WebSocket (/ws), served by one io_context on a few threads.
#pragma once

#include <cstdint>
#include <memory>

#include "server/server_context.h"

namespace tandem::server {

class Server {
 public:
  // PRECONDITIONS: ctx->model (engine included) is filled before ctx->ready
  // is set, and the engine is destroyed before the Server (engine callbacks
  // post into its io_context).
  explicit Server(std::shared_ptr<ServerContext> ctx);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0: any free port). Throws tandem::Error naming the
  // address when it cannot.
  void listen();
  // The bound port (after listen()).
  uint16_t port() const;
  // Starts serving on background threads and returns. Until ctx->ready is
  // set, every route answers 503 (loading).
  void start();
  // Blocks until SIGTERM or SIGINT has drained the server: new generations
  // are refused (503), running streams finish. A second signal, or one that
  // comes while loading, stops at once. Returns whether a signal stopped it
  // before the model was ready.
  bool wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::server
