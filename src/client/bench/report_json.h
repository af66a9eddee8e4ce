// The JSON file `--json-out` writes: config, per-level statistics and every
// request's raw timings.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "client/bench/bench_run.h"

namespace tandem::client::bench {

nlohmann::json summary_json(const Summary& s);
nlohmann::json request_json(const RequestResult& r);
nlohmann::json level_json(const LevelReport& level);
nlohmann::json bench_run_json(const BenchRun& run);

// Writes `text` to `path` (replacing it); throws std::runtime_error naming
// the path when it cannot.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace tandem::client::bench
