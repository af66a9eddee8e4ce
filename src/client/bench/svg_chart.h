// The `--plot` chart: a hand-written SVG with two panels sharing the
// concurrency axis. Top: output tokens/s (all streams, and per stream).
// Bottom: TTFT p50/p90/p99 in milliseconds.
#pragma once

#include <string>
#include <vector>

#include "client/bench/bench_run.h"

namespace tandem::client::bench {

struct ChartSeries {
  std::string name;
  std::string color;   // CSS color
  bool dashed = false;
  std::vector<double> y;  // one per x; NaN leaves a gap
};

struct ChartPanel {
  std::string title;
  std::string y_label;
  std::vector<ChartSeries> series;
};

// A chart of panels stacked over one x axis of `x` values (concurrency
// levels, ascending, > 0; log2-spaced when they span a factor of 4 or more).
std::string render_svg(const std::string& title, const std::string& subtitle, const std::string& x_label,
                       const std::vector<double>& x, const std::vector<ChartPanel>& panels);

// The bench chart for a run.
std::string render_bench_chart(const BenchRun& run);

// Round axis steps: 1, 2 or 5 times a power of ten, giving about `ticks`
// intervals from 0 to at least `max_value`. Returns {step, axis_max}.
std::pair<double, double> nice_axis(double max_value, int ticks);

// Escapes &, <, >, " and ' for XML text and attributes.
std::string xml_escape(const std::string& text);

}  // namespace tandem::client::bench
