// Where a backend lives. Users write "HOST:PORT", "ws://HOST:PORT",
// "ws://HOST:PORT/ws", "http://HOST:PORT" or just "PORT" (this machine); all name the same server, whose
// WebSocket protocol is at /ws and HTTP API at the root (docs/PROTOCOL.md).
#pragma once

#include <string>
#include <string_view>

namespace tandem::client::net {

constexpr const char* kDefaultBackend = "ws://127.0.0.1:8765";

struct BackendUrl {
  std::string host;        // "127.0.0.1", "gpu-box", "::1" (no brackets)
  std::string port;        // "8765"
  std::string ws_path;     // "/ws" unless the URL named another path

  std::string host_port() const;  // "127.0.0.1:8765", "[::1]:8765"
  std::string ws() const;         // "ws://127.0.0.1:8765/ws"
  std::string http() const;       // "http://127.0.0.1:8765"
};

// Throws NetError naming what is wrong: an unknown scheme (wss/https: TLS is
// not supported yet), an empty host, a port outside 1..65535.
BackendUrl parse_backend_url(std::string_view text);

}  // namespace tandem::client::net
