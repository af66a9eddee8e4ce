#include "client/net/http_client.h"

#include "client/net/net_error.h"

namespace tandem::client::net {

asio::awaitable<HttpResult> async_http_get(BackendUrl url, std::string target, std::string bearer,
                                           std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string where = url.host_port();
  beast::error_code ec;
  tcp::resolver resolver(executor);
  auto endpoints = co_await resolver.async_resolve(url.host, url.port, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, where));
  beast::tcp_stream stream(executor);
  stream.expires_at(deadline);
  co_await stream.async_connect(endpoints, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, where));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, url.host_port());
  req.set(http::field::user_agent, "tandem");
  if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
  co_await http::async_write(stream, req, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, where));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(size_t{16} << 20);
  co_await http::async_read(stream, buffer, parser, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, where));
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  HttpResult result;
  const auto& res = parser.get();
  result.status = static_cast<int>(res.result_int());
  result.content_type = std::string(res[http::field::content_type]);
  result.body = res.body();
  co_return result;
}

HttpResult http_get(const BackendUrl& url, const std::string& target, const std::string& bearer,
                    std::chrono::milliseconds timeout) {
  asio::io_context io;
  auto future = asio::co_spawn(io, async_http_get(url, target, bearer, timeout), asio::use_future);
  io.run();
  return future.get();
}

}  // namespace tandem::client::net
