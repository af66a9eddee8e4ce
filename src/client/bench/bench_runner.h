// Runs `tandem bench`: open the backend, size the prompts, warm up, sweep the
// concurrency levels, then print the table and write the JSON and SVG files.
#pragma once

#include <vector>

#include "client/bench/backend.h"
#include "client/bench/bench_run.h"
#include "client/bench/progress.h"

namespace tandem::client::bench {

// Exit codes: 0 every request succeeded; 1 the benchmark could not run (bad
// options, backend unreachable or refusing, a file not writable); 2 it ran
// but some requests failed (they are counted per level in the report); 130
// SIGINT/SIGTERM stopped it (what ran is still reported; a second signal
// exits at once).
int run_bench(const BenchOptions& options);

// One level: `concurrency` streams in flight until every request has run,
// or until `*stop` turns true (no new requests start; those in flight end).
asio::awaitable<LevelReport> run_level(Backend& backend, const std::vector<PreparedRequest>& requests,
                                       int concurrency, Progress* progress, const bool* stop = nullptr);

}  // namespace tandem::client::bench
