// The plain-text report `tandem bench` prints on stdout.
#pragma once

#include <string>

#include "client/bench/bench_run.h"

namespace tandem::client::bench {

// What was measured: backend, model, workload (a few lines).
std::string format_run_header(const BenchRun& run);
// One row per level, then one line per level that had failures.
std::string format_level_table(const BenchRun& run);

}  // namespace tandem::client::bench
