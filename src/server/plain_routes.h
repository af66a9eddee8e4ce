// Routes answered in one piece without the engine's streams: /health,
// /metrics, /v1/status, /v1/models, /tokenize, /detokenize, /apply-template.
// Kept free of networking types so they are cheap to compile and to test.
#pragma once

#include <optional>
#include <string>

#include "server/server_context.h"

namespace tandem::server {

struct PlainResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// Answers `method path` when it is one of these routes; nullopt otherwise.
// Errors (bad JSON, bad fields) come back as OpenAI-shaped error bodies.
std::optional<PlainResponse> handle_plain_route(ServerContext& ctx, const std::string& method, const std::string& path,
                                                const std::string& body);

PlainResponse error_response(int status, const std::string& code, const std::string& message,
                             const std::string& param = {});

}  // namespace tandem::server
