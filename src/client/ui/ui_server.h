// `tandem ui`'s HTTP side: the web UI's files (tandem_webui), and the same
// routes a tandem-server offers the UI on its own origin: the WebSocket
// protocol at /ws (served by the bridge), GET /v1/status (the bridge's
// aggregate) and GET /health (200 while any backend is healthy).
#pragma once

#include <memory>
#include <string>

#include "client/net/asio.h"
#include "client/ui/bridge.h"

namespace tandem::client::ui {

// Accepts connections on `acceptor` until the io_context stops.
// PRECONDITIONS: `bridge` outlives every coroutine this spawns (both live on
// one io_context that is stopped before the bridge is destroyed).
asio::awaitable<void> serve_ui(net::tcp::acceptor& acceptor, Bridge& bridge);

// One browser's WebSocket, after the upgrade request was read.
asio::awaitable<void> run_browser_session(Bridge& bridge, net::beast::tcp_stream stream,
                                          net::http::request<net::http::string_body> request);

}  // namespace tandem::client::ui
