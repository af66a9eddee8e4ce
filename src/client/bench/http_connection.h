// One HTTP/1.1 keep-alive connection to the backend, for plain JSON requests
// and for reading a streamed response piece by piece.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "client/bench/bench_options.h"
#include "client/bench/net.h"

namespace tandem::client::bench {

struct HttpResult {
  int status = 0;
  std::string body;
};

class HttpConnection {
 public:
  HttpConnection(asio::any_io_executor executor, BackendUrl url, std::string api_key);

  // Sends one request and reads the whole response. A kept-alive connection
  // the server has closed meanwhile is reopened once. Network failures throw
  // boost::system::system_error.
  asio::awaitable<HttpResult> request(http::verb verb, const std::string& path, const std::string& body,
                                      Clock::time_point deadline);

  // Sends one request; for a 2xx answer calls `on_body` with each piece of
  // the body as it arrives (and the clock when it did) and returns the
  // status with an empty body; otherwise returns the status and the whole
  // body. Throws boost::system::system_error on network failures.
  using BodyPiece = std::function<void(std::string_view piece, Clock::time_point at)>;
  asio::awaitable<HttpResult> stream(const std::string& path, const std::string& body, Clock::time_point deadline,
                                     const BodyPiece& on_body);

  // False after a failure or a response without keep-alive.
  bool reusable() const { return open_; }
  // Closes the socket; the next request reconnects.
  void reset();
  // What the last exchange was doing when it stopped ("reading the response
  // header", ...), for error messages.
  const char* phase() const { return phase_; }
  std::string target(const std::string& path) const { return url_.base_path + path; }

 private:
  asio::awaitable<void> connect(Clock::time_point deadline);
  http::request<http::string_body> make_request(http::verb verb, const std::string& path, const std::string& body) const;

  BackendUrl url_;
  std::string api_key_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool open_ = false;
  const char* phase_ = "idle";
};

}  // namespace tandem::client::bench
