// `tandem ui`: serves the web UI and bridges it to one or more backends
// (client/ui/bridge.h). The browser talks to this process exactly as it
// would to a tandem-server; the backends see one WebSocket from it each.
#include <cstdio>
#include <csignal>
#include <memory>

#include "client/commands.h"
#include "client/net/net_error.h"
#include "client/ui/bridge.h"
#include "client/ui/ui_server.h"

namespace tandem::client {
namespace {

namespace asio = net::asio;

struct UiOptions {
  std::vector<std::string> backends{net::kDefaultBackend};
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  double poll_interval_s = 1.0;
};

int run_ui(const UiOptions& o) {
  ui::BridgeOptions bridge_options;
  for (const std::string& b : o.backends) bridge_options.backends.push_back(net::parse_backend_url(b));
  bridge_options.api_key = o.api_key;
  bridge_options.poll_interval = std::chrono::milliseconds(static_cast<int64_t>(o.poll_interval_s * 1000));
  bridge_options.version = TANDEM_VERSION;

  asio::io_context io(1);
  net::beast::error_code ec;
  const auto address = asio::ip::make_address(o.host, ec);
  if (ec) throw net::NetError("--host '" + o.host + "' is not an IP address (use 127.0.0.1, 0.0.0.0 or ::)");
  net::tcp::acceptor acceptor(io);
  const net::tcp::endpoint endpoint(address, static_cast<unsigned short>(o.port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw net::NetError("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + ec.message() +
                        (ec == asio::error::address_in_use ? " (another program uses that port; pick one with --port)" : ""));
  const unsigned short port = acceptor.local_endpoint().port();

  ui::Bridge bridge(io.get_executor(), bridge_options);
  bridge.start();
  asio::co_spawn(io, ui::serve_ui(acceptor, bridge), asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const net::beast::error_code&, int) { io.stop(); });

  const bool v6 = o.host.find(':') != std::string::npos;
  std::printf("tandem ui listening on http://%s:%u (backends:", v6 ? ("[" + o.host + "]").c_str() : o.host.c_str(), port);
  for (const net::BackendUrl& b : bridge_options.backends) std::printf(" %s", b.ws().c_str());
  std::printf(")\n");
  std::fflush(stdout);
  io.run();
  std::fprintf(stderr, "tandem ui: stopped\n");
  return 0;
}

}  // namespace

Action add_ui_command(CLI::App& app) {
  auto o = std::make_shared<UiOptions>();
  CLI::App* cmd = app.add_subcommand("ui", "Serve the web UI here and bridge it to one or more backends");
  cmd->add_option("--backend", o->backends, "A backend (repeat for several): ws://HOST:PORT, http://HOST:PORT or HOST:PORT")
      ->capture_default_str();
  cmd->add_option("--host", o->host, "Address to listen on (0.0.0.0: every interface)")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key, "The backends' API key, if they have one");
  cmd->add_option("--poll-interval", o->poll_interval_s, "Seconds between status polls of each backend")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  return [o] { return run_ui(*o); };
}

}  // namespace tandem::client
