// A server under test, spoken to through one API. `open` checks that it is
// there and learns the model; `run` sends one streaming request and measures
// it; `count_prompt_tokens` tells how many tokens the server makes of a text.
// Everything runs on one io_context thread; many `run` calls may be in flight.
#pragma once

#include <memory>
#include <string>

#include "client/bench/bench_options.h"
#include "client/bench/net.h"
#include "client/bench/request_result.h"
#include "client/bench/workload.h"

namespace tandem::client::bench {

struct PreparedRequest {
  RequestSpec spec;
  std::string prompt;
};

struct ServerInfo {
  std::string model;
  std::string server_version;
  int64_t context_size = 0;  // 0 when unknown
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Throws SetupError with a message for the user when the backend cannot be used.
  virtual asio::awaitable<ServerInfo> open() = 0;
  // Never throws for a failed request: the result carries the error.
  virtual asio::awaitable<RequestResult> run(const PreparedRequest& request, Clock::time_point level_start) = 0;
  // The prompt tokens the server counts for `text` (BOS included). Throws
  // SetupError when it cannot tell.
  virtual asio::awaitable<int64_t> count_prompt_tokens(const std::string& text) = 0;
  // Whether count_prompt_tokens is cheap and exact (a tokenizer endpoint),
  // so that every prompt can be checked, or costs a generation each.
  virtual bool cheap_token_counts() const = 0;
  virtual asio::awaitable<void> close() = 0;
};

std::unique_ptr<Backend> make_tandem_ws_backend(asio::any_io_executor executor, const BenchOptions& options,
                                                const BackendUrl& url);
std::unique_ptr<Backend> make_openai_backend(asio::any_io_executor executor, const BenchOptions& options,
                                             const BackendUrl& url);

}  // namespace tandem::client::bench
