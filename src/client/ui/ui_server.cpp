#include "client/ui/ui_server.h"

#include <cstdio>

#include "webui/assets.h"

namespace tandem::client::ui {
namespace {

using nlohmann::json;
using net::beast::error_code;
namespace beast = net::beast;
namespace http = net::http;
namespace websocket = net::websocket;
using Request = http::request<http::string_body>;

std::string path_of(std::string_view target) {
  std::string path(target);
  const size_t q = path.find('?');
  if (q != std::string::npos) path.resize(q);
  return path;
}

asio::awaitable<bool> write_response(beast::tcp_stream& stream, http::response<http::string_body> res, bool keep) {
  res.set(http::field::server, "tandem-ui");
  res.keep_alive(keep);
  res.prepare_payload();
  error_code ec;
  stream.expires_after(std::chrono::seconds(30));
  co_await http::async_write(stream, res, net::use_ec(ec));
  co_return !ec && keep;
}

http::response<http::string_body> json_response(const Request& req, int status, const json& body) {
  http::response<http::string_body> res{static_cast<http::status>(status), req.version()};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  if (req.method() != http::verb::head) res.body() = body.dump();
  return res;
}

json error_body(const std::string& code, const std::string& message) {
  return {{"error", {{"message", message}, {"type", code}, {"code", code}}}};
}

http::response<http::string_body> plain_response(const Request& req, const std::string& path, Bridge& bridge) {
  if (req.method() != http::verb::get && req.method() != http::verb::head)
    return json_response(req, 405, error_body("method_not_allowed", "tandem ui serves GET only (the API is on the backends)"));
  if (path == "/health") {
    const bool ok = bridge.any_healthy();
    return json_response(req, ok ? 200 : 503, {{"status", ok ? "ok" : "unavailable"}});
  }
  if (path == "/v1/status") return json_response(req, 200, bridge.status());
  if (const webui::Asset* asset = webui::find_asset(path)) {
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, asset->content_type);
    res.set(http::field::cache_control, webui::cache_control(*asset));
    if (asset->gzip) res.set(http::field::content_encoding, "gzip");
    if (req.method() != http::verb::head) res.body() = std::string(asset->body);
    return res;
  }
  return json_response(req, 404, error_body("not_found", "no such path: " + path));
}

asio::awaitable<void> http_session(net::tcp::socket socket, Bridge& bridge) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(size_t{1} << 20);
    error_code ec;
    stream.expires_after(std::chrono::seconds(60));
    co_await http::async_read(stream, buffer, parser, net::use_ec(ec));
    if (ec) co_return;
    Request req = parser.release();
    const std::string path = path_of(req.target());
    const bool keep = req.keep_alive();
    if (websocket::is_upgrade(req)) {
      if (path != "/ws") {
        http::response<http::string_body> res = json_response(req, 404, error_body("not_found", "the WebSocket protocol is at /ws"));
        co_await write_response(stream, std::move(res), false);
        co_return;
      }
      stream.expires_never();
      co_await run_browser_session(bridge, std::move(stream), std::move(req));
      co_return;
    }
    // The response is built first and written by one co_await: GCC 12
    // miscompiles string literals inside co_await expressions.
    http::response<http::string_body> res = plain_response(req, path, bridge);
    const bool go_on = co_await write_response(stream, std::move(res), keep);
    if (!go_on) break;
  }
  error_code ec;
  stream.socket().shutdown(net::tcp::socket::shutdown_send, ec);
}

asio::awaitable<void> counted_session(net::tcp::socket socket, Bridge& bridge) {
  bridge.connection_opened();
  co_await http_session(std::move(socket), bridge);
  bridge.connection_closed();
}

}  // namespace

asio::awaitable<void> serve_ui(net::tcp::acceptor& acceptor, Bridge& bridge) {
  for (;;) {
    error_code ec;
    net::tcp::socket socket = co_await acceptor.async_accept(net::use_ec(ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;  // e.g. out of file descriptors: keep serving the others
    asio::co_spawn(acceptor.get_executor(), counted_session(std::move(socket), bridge), asio::detached);
  }
}

}  // namespace tandem::client::ui
