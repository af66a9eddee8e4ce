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
// but some requests failed (they are counted per level in the report).
int run_bench(const BenchOptions& options);

// One level: `concurrency` streams in flight until every request has run.
asio::awaitable<LevelReport> run_level(Backend& backend, const std::vector<PreparedRequest>& requests,
                                       int concurrency, Progress* progress);

}  // namespace tandem::client::bench
