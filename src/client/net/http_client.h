// A small HTTP/1.1 client for the backend's plain routes (/health, /v1/status):
// one GET per connection, with a deadline over the whole exchange.
#pragma once

#include <chrono>
#include <string>

#include "client/net/asio.h"
#include "client/net/url.h"

namespace tandem::client::net {

struct HttpResult {
  int status = 0;
  std::string content_type;
  std::string body;
};

// GET `target` ("/v1/status") from `url`'s host. `bearer` (may be empty) goes
// as "Authorization: Bearer …". Throws NetError with a plain-words reason when
// the server cannot be reached or does not answer within `timeout`; any HTTP
// status is a result, not an error.
asio::awaitable<HttpResult> async_http_get(BackendUrl url, std::string target, std::string bearer,
                                           std::chrono::milliseconds timeout);

// The same, blocking (runs its own io_context).
HttpResult http_get(const BackendUrl& url, const std::string& target, const std::string& bearer,
                    std::chrono::milliseconds timeout);

}  // namespace tandem::client::net
