// Summary statistics for latency and rate samples.
#pragma once

#include <cstddef>
#include <vector>

namespace tandem::client::bench {

// The q-th quantile (0 <= q <= 1) of `sorted` (ascending) by linear
// interpolation between closest ranks: position q * (n - 1), as numpy's
// default `percentile`. PRECONDITIONS: `sorted` is non-empty and ascending.
double quantile_sorted(const std::vector<double>& sorted, double q);

struct Summary {
  size_t count = 0;  // 0: every other field is 0 and means "no samples"
  double mean = 0, min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;
};

Summary summarize(std::vector<double> samples);

}  // namespace tandem::client::bench
