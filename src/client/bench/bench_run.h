// One whole `tandem bench` run: what was asked, what the backend said about
// itself, how prompts were sized, and the per-level reports. The table, the
// JSON file and the SVG chart are all rendered from this.
#pragma once

#include <string>
#include <vector>

#include "client/bench/bench_options.h"
#include "client/bench/level_report.h"
#include "client/bench/workload.h"

namespace tandem::client::bench {

struct BenchRun {
  BenchOptions options;
  BackendUrl url;
  std::string model;
  std::string server_version;  // tandem API only
  int64_t context_size = 0;    // tandem API only; 0 when unknown
  std::string started_at;      // ISO 8601 UTC
  // How prompt text was sized to the token targets: "tokenize" (tandem's
  // /tokenize, each prompt checked) or "usage_fit" (two probe requests'
  // usage.prompt_tokens, a line through them; prompts are approximate).
  std::string prompt_sizing;
  TokenModel token_model;
  std::vector<LevelReport> levels;
};

}  // namespace tandem::client::bench
