#include "client/bench/http_connection.h"

#include <limits>

namespace tandem::client::bench {

NetFailure classify_net_error(const beast::error_code& ec) {
  if (ec == beast::error::timeout || ec == asio::error::timed_out) return {"timeout", "timed out: " + ec.message()};
  if (ec == asio::error::connection_refused) return {"connection_refused", "connection refused"};
  if (ec == asio::error::eof || ec == asio::error::connection_reset || ec == http::error::end_of_stream ||
      ec == websocket::error::closed || ec == http::error::partial_message || ec == asio::error::broken_pipe)
    return {"connection_closed", "the server closed the connection: " + ec.message()};
  if (ec.category() == asio::error::get_netdb_category() || ec == asio::error::host_not_found ||
      ec == asio::error::host_not_found_try_again)
    return {"resolve_failed", "cannot resolve the host: " + ec.message()};
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) return {"bad_http", "malformed HTTP: " + ec.message()};
  return {"network_error", ec.message()};
}

HttpConnection::HttpConnection(asio::any_io_executor executor, BackendUrl url, std::string api_key)
    : url_(std::move(url)), api_key_(std::move(api_key)), stream_(std::move(executor)) {}

void HttpConnection::reset() {
  beast::error_code ec;
  stream_.socket().close(ec);
  open_ = false;
}

asio::awaitable<void> HttpConnection::connect(Clock::time_point deadline) {
  beast::error_code ec;
  stream_.socket().close(ec);
  buffer_.consume(buffer_.size());
  phase_ = "connecting";
  tcp::resolver resolver(stream_.get_executor());
  const auto endpoints = co_await resolver.async_resolve(url_.host, url_.port, asio::use_awaitable);
  stream_.expires_at(deadline);
  co_await stream_.async_connect(endpoints, asio::use_awaitable);
  stream_.socket().set_option(tcp::no_delay(true), ec);
  open_ = true;
}

http::request<http::string_body> HttpConnection::make_request(http::verb verb, const std::string& path,
                                                                const std::string& body) const {
  http::request<http::string_body> req{verb, target(path), 11};
  req.set(http::field::host, url_.host + ":" + url_.port);
  req.set(http::field::user_agent, "tandem-bench");
  req.keep_alive(true);
  if (!api_key_.empty()) req.set(http::field::authorization, "Bearer " + api_key_);
  if (verb == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
  }
  return req;
}

asio::awaitable<HttpResult> HttpConnection::request(http::verb verb, const std::string& path, const std::string& body,
                                                    Clock::time_point deadline) {
  // A reused connection may have been closed by the server while idle; only
  // then is one retry on a fresh connection safe (nothing was answered).
  for (int attempt = 0;; ++attempt) {
    const bool reused = open_;
    if (!open_) co_await connect(deadline);
    auto req = make_request(verb, path, body);
    beast::error_code ec;
    stream_.expires_at(deadline);
    phase_ = "sending the request";
    co_await http::async_write(stream_, req, use_ec(ec));
    http::response_parser<http::string_body> parser;
    phase_ = "reading the response";
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!ec) co_await http::async_read(stream_, buffer_, parser, use_ec(ec));
    if (ec) {
      open_ = false;
      if (reused && attempt == 0 && ec != beast::error::timeout) continue;
      throw boost::system::system_error(ec);
    }
    open_ = parser.get().keep_alive();
    co_return HttpResult{static_cast<int>(parser.get().result_int()), std::move(parser.get().body())};
  }
}

asio::awaitable<HttpResult> HttpConnection::stream(const std::string& path, const std::string& body,
                                                   Clock::time_point deadline, const BodyPiece& on_body) {
  for (int attempt = 0;; ++attempt) {
    const bool reused = open_;
    if (!open_) co_await connect(deadline);
    auto req = make_request(http::verb::post, path, body);
    beast::error_code ec;
    stream_.expires_at(deadline);
    phase_ = "sending the request";
    co_await http::async_write(stream_, req, use_ec(ec));
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    phase_ = "reading the response header";
    if (!ec) co_await http::async_read_header(stream_, buffer_, parser, use_ec(ec));
    if (ec) {
      open_ = false;
      if (reused && attempt == 0 && ec != beast::error::timeout) continue;
      throw boost::system::system_error(ec);
    }
    const int status = static_cast<int>(parser.get().result_int());
    const bool success = status >= 200 && status < 300;
    std::string error_body;
    phase_ = "reading the response body";
    char piece[16384];
    while (!parser.is_done()) {
      parser.get().body().data = piece;
      parser.get().body().size = sizeof piece;
      co_await http::async_read_some(stream_, buffer_, parser, use_ec(ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        open_ = false;
        throw boost::system::system_error(ec);
      }
      const size_t n = sizeof piece - parser.get().body().size;
      if (n == 0) continue;
      if (success) on_body(std::string_view(piece, n), Clock::now());
      else if (error_body.size() < (size_t{1} << 20)) error_body.append(piece, n);
    }
    open_ = parser.get().keep_alive();
    phase_ = "idle";
    co_return HttpResult{status, std::move(error_body)};
  }
}

}  // namespace tandem::client::bench
