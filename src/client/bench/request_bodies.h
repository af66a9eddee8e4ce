// The JSON a benchmark request sends, for each API.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "client/bench/backend.h"

namespace tandem::client::bench {

// POST /v1/completions, streaming with usage in the last chunk.
nlohmann::json openai_completion_body(const PreparedRequest& request, const BenchOptions& options,
                                      const std::string& model);
// The WebSocket `generate` command (docs/PROTOCOL.md).
nlohmann::json tandem_generate_command(const std::string& id, const PreparedRequest& request,
                                       const BenchOptions& options);
// The WebSocket `init` command.
nlohmann::json tandem_init_command(const BenchOptions& options);

}  // namespace tandem::client::bench
