// One TCP connection: read a request (header within header_timeout, body up
// to body_limit), route it, answer, repeat while keep-alive holds.
#include <spdlog/spdlog.h>

#include "server/auth.h"
#include "server/net.h"
#include "server/plain_routes.h"
#include "webui/assets.h"

namespace tandem::server {
namespace {

constexpr auto use_ec = [](beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); };

std::string path_of(beast::string_view target) {
  std::string path(target);
  const size_t q = path.find('?');
  if (q != std::string::npos) path.resize(q);
  return path;
}

asio::awaitable<bool> write_plain(ServerContext& ctx, beast::tcp_stream& stream, unsigned version, bool keep_alive,
                                  const PlainResponse& r, bool head_only = false) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  set_common_headers(res);
  res.set(http::field::content_type, r.content_type);
  if (!head_only) res.body() = r.body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  ctx.counters.count_response(r.status);
  beast::error_code ec;
  stream.expires_after(ctx.write_timeout);
  co_await http::async_write(stream, res, use_ec(ec));
  co_return !ec && keep_alive;
}

// The embedded web UI (GET / and its assets). Public like /health: the page
// itself asks for the API key when the server wants one.
asio::awaitable<bool> write_asset(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& req,
                                  const webui::Asset& asset) {
  http::response<http::string_body> res{http::status::ok, req.version()};
  set_common_headers(res);
  res.set(http::field::content_type, asset.content_type);
  res.set(http::field::cache_control, webui::cache_control(asset));
  res.set("X-Content-Type-Options", "nosniff");
  if (asset.gzip) res.set(http::field::content_encoding, "gzip");
  if (req.method() == http::verb::head) res.content_length(asset.body.size());
  else res.body() = std::string(asset.body);
  res.keep_alive(req.keep_alive());
  if (req.method() != http::verb::head) res.prepare_payload();
  ctx.counters.count_response(200);
  beast::error_code ec;
  stream.expires_after(ctx.write_timeout);
  co_await http::async_write(stream, res, use_ec(ec));
  co_return !ec && req.keep_alive();
}

// After an error that ends the connection with unread input (a body over the
// limit), read and drop input for a moment so the client sees the response
// instead of a reset.
asio::awaitable<void> linger_close(beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::seconds(2));
  char scratch[16384];
  size_t dropped = 0;
  while (!ec && dropped < (size_t{64} << 20))
    dropped += co_await stream.async_read_some(asio::buffer(scratch), use_ec(ec));
  stream.socket().close(ec);
}

asio::awaitable<bool> route(ServerContext& ctx, beast::tcp_stream& stream, const HttpRequest& req) {
  const std::string path = path_of(req.target());
  const std::string method(req.method_string());
  const bool keep = req.keep_alive();
  if (req.method() == http::verb::options) {
    http::response<http::empty_body> res{http::status::no_content, req.version()};
    set_common_headers(res);
    res.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
    res.set(http::field::access_control_allow_headers, "Authorization, Content-Type");
    res.set(http::field::access_control_max_age, "86400");
    res.keep_alive(keep);
    ctx.counters.count_response(204);
    beast::error_code ec;
    stream.expires_after(ctx.write_timeout);
    co_await http::async_write(stream, res, use_ec(ec));
    co_return !ec && keep;
  }
  if (req.method() == http::verb::get || req.method() == http::verb::head) {
    if (const webui::Asset* asset = webui::find_asset(path)) co_return co_await write_asset(ctx, stream, req, *asset);
  }
  if (path != "/health" && !bearer_authorized(ctx.config.api_key, req[http::field::authorization])) {
    co_return co_await write_plain(
        ctx, stream, req.version(), keep,
        error_response(401, "invalid_api_key", "missing or wrong API key: send the header 'Authorization: Bearer KEY'"));
  }
  if (!ctx.ready.load(std::memory_order_acquire) || path == "/health") {
    // While loading every route answers 503 (plain_routes says so).
    std::optional<PlainResponse> r = handle_plain_route(ctx, method, path, req.body());
    co_return co_await write_plain(ctx, stream, req.version(), keep, *r, req.method() == http::verb::head);
  }
  if (req.method() == http::verb::post && (path == "/v1/chat/completions" || path == "/chat/completions"))
    co_return co_await serve_generation(ctx, stream, req, true);
  if (req.method() == http::verb::post && (path == "/v1/completions" || path == "/completions"))
    co_return co_await serve_generation(ctx, stream, req, false);
  if (std::optional<PlainResponse> r = handle_plain_route(ctx, method, path, req.body()))
    co_return co_await write_plain(ctx, stream, req.version(), keep, *r, req.method() == http::verb::head);
  co_return co_await write_plain(ctx, stream, req.version(), keep,
                                 error_response(404, "not_found", "no route for " + method + " " + path));
}

}  // namespace

void set_common_headers(http::fields& fields) {
  fields.set(http::field::server, "tandem-server");
  fields.set(http::field::access_control_allow_origin, "*");
}

asio::awaitable<void> run_http_session(std::shared_ptr<ServerContext> ctx, tcp::socket socket) {
  ctx->counters.open_connections++;
  struct Closed {
    ServerContext& c;
    ~Closed() { c.counters.open_connections--; }
  } closed{*ctx};
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  try {
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(ctx->body_limit);
      parser.header_limit(static_cast<std::uint32_t>(ctx->header_limit));
      beast::error_code ec;
      // The whole header must arrive within header_timeout: a client that
      // trickles bytes (slow-loris) or idles on keep-alive is dropped.
      stream.expires_after(ctx->header_timeout);
      co_await http::async_read_header(stream, buffer, parser, use_ec(ec));
      if (ec == http::error::header_limit) {
        co_await write_plain(*ctx, stream, 11, false,
                             error_response(431, "header_too_large", "the request header is over the size limit"));
        co_return co_await linger_close(stream);
      }
      if (ec == http::error::body_limit) {
        co_await write_plain(*ctx, stream, parser.get().version(), false,
                             error_response(413, "body_too_large",
                                            "the request body is over the limit of " +
                                                std::to_string(ctx->body_limit) + " bytes"));
        co_return co_await linger_close(stream);
      }
      if (ec) {
        if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != asio::error::eof &&
            ec != asio::error::connection_reset) {
          co_await write_plain(*ctx, stream, 11, false, error_response(400, "bad_request", "malformed HTTP request"));
        }
        break;
      }
      if (websocket::is_upgrade(parser.get())) {
        if (path_of(parser.get().target()) != "/ws") {
          co_await write_plain(*ctx, stream, parser.get().version(), false,
                               error_response(404, "not_found", "WebSocket is served at /ws"));
          break;
        }
        stream.expires_never();
        co_return co_await run_ws_session(ctx, std::move(stream), parser.release());
      }
      stream.expires_after(ctx->body_timeout);
      co_await http::async_read(stream, buffer, parser, use_ec(ec));
      if (ec == http::error::body_limit) {
        co_await write_plain(*ctx, stream, parser.get().version(), false,
                             error_response(413, "body_too_large",
                                            "the request body is over the limit of " +
                                                std::to_string(ctx->body_limit) + " bytes"));
        co_return co_await linger_close(stream);
      }
      if (ec) break;
      stream.expires_never();
      const HttpRequest req = parser.release();
      if (!co_await route(*ctx, stream, req)) break;
    }
  } catch (const std::exception& e) {
    ctx->log->warn("connection dropped after an internal error: {}", e.what());
  }
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.socket().close(ec);
}

}  // namespace tandem::server
