#include "client/bench/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tandem::client::bench {
namespace {

constexpr double kWidth = 760;
constexpr double kLeft = 80;     // room for y tick labels and the rotated y label
constexpr double kRight = 170;   // room for the legend
constexpr double kTop = 64;      // title and subtitle
constexpr double kPanelHeight = 230;
constexpr double kPanelGap = 70;  // panel title and x tick labels
constexpr double kBottom = 56;    // x axis label

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string tick_label(double v) {
  char buf[32];
  if (v != 0 && std::fabs(v) < 1) std::snprintf(buf, sizeof buf, "%.2g", v);
  else if (std::fabs(v) >= 10000) std::snprintf(buf, sizeof buf, "%.0fk", v / 1000);
  else std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') out += ' ';
        else out += c;
    }
  }
  return out;
}

std::pair<double, double> nice_axis(double max_value, int ticks) {
  if (!(max_value > 0) || !std::isfinite(max_value)) return {1.0, 1.0 * ticks};
  const double raw = max_value / ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  const double axis_max = std::ceil(max_value / step - 1e-9) * step;
  return {step, std::max(axis_max, step)};
}

std::string render_svg(const std::string& title, const std::string& subtitle, const std::string& x_label,
                       const std::vector<double>& x, const std::vector<ChartPanel>& panels) {
  const double plot_w = kWidth - kLeft - kRight;
  const double height = kTop + static_cast<double>(panels.size()) * (kPanelHeight + kPanelGap) - kPanelGap + kBottom;
  // x positions: log2 when the levels span a factor of 4 or more, else linear.
  double x_min = x.empty() ? 1 : *std::min_element(x.begin(), x.end());
  double x_max = x.empty() ? 1 : *std::max_element(x.begin(), x.end());
  const bool log_x = x_min > 0 && x_max / x_min >= 4;
  auto fx = [&](double v) {
    double t = 0.5;
    if (x_max > x_min) t = log_x ? std::log2(v / x_min) / std::log2(x_max / x_min) : (v - x_min) / (x_max - x_min);
    return kLeft + 20 + t * (plot_w - 40);
  };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) + "\" height=\"" + num(height) +
       "\" viewBox=\"0 0 " + num(kWidth) + " " + num(height) +
       "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n";
  s += "<rect x=\"0\" y=\"0\" width=\"" + num(kWidth) + "\" height=\"" + num(height) + "\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(kWidth / 2) + "\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">" +
       xml_escape(title) + "</text>\n";
  s += "<text x=\"" + num(kWidth / 2) + "\" y=\"46\" text-anchor=\"middle\" fill=\"#555\">" + xml_escape(subtitle) +
       "</text>\n";

  for (size_t p = 0; p < panels.size(); ++p) {
    const ChartPanel& panel = panels[p];
    const double top = kTop + static_cast<double>(p) * (kPanelHeight + kPanelGap) + 22;
    const double bottom = top + kPanelHeight - 22;
    double y_max = 0;
    for (const ChartSeries& se : panel.series)
      for (double v : se.y)
        if (std::isfinite(v)) y_max = std::max(y_max, v);
    const auto [step, axis_max] = nice_axis(y_max, 5);
    auto fy = [&](double v) { return bottom - (v / axis_max) * (bottom - top); };

    s += "<g>\n";
    s += "<text x=\"" + num(kLeft) + "\" y=\"" + num(top - 8) + "\" font-weight=\"bold\">" + xml_escape(panel.title) +
         "</text>\n";
    // Grid and y ticks.
    for (double v = 0; v <= axis_max + step * 1e-6; v += step) {
      const double y = fy(v);
      s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(y) + "\" x2=\"" + num(kLeft + plot_w) + "\" y2=\"" + num(y) +
           "\" stroke=\"#e3e3e3\"/>\n";
      s += "<text x=\"" + num(kLeft - 6) + "\" y=\"" + num(y + 4) + "\" text-anchor=\"end\">" + tick_label(v) +
           "</text>\n";
    }
    // x ticks at each level.
    for (double v : x) {
      s += "<line x1=\"" + num(fx(v)) + "\" y1=\"" + num(bottom) + "\" x2=\"" + num(fx(v)) + "\" y2=\"" +
           num(bottom + 5) + "\" stroke=\"#333\"/>\n";
      s += "<text x=\"" + num(fx(v)) + "\" y=\"" + num(bottom + 19) + "\" text-anchor=\"middle\">" + tick_label(v) +
           "</text>\n";
    }
    // Axes.
    s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(top) + "\" x2=\"" + num(kLeft) + "\" y2=\"" + num(bottom) +
         "\" stroke=\"#333\"/>\n";
    s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(bottom) + "\" x2=\"" + num(kLeft + plot_w) + "\" y2=\"" +
         num(bottom) + "\" stroke=\"#333\"/>\n";
    const double mid_y = (top + bottom) / 2;
    s += "<text x=\"20\" y=\"" + num(mid_y) + "\" text-anchor=\"middle\" transform=\"rotate(-90 20 " + num(mid_y) +
         ")\">" + xml_escape(panel.y_label) + "</text>\n";
    // Series: a polyline through the finite points, a dot on each.
    for (size_t k = 0; k < panel.series.size(); ++k) {
      const ChartSeries& se = panel.series[k];
      std::string points;
      std::string dots;
      for (size_t i = 0; i < x.size() && i < se.y.size(); ++i) {
        if (!std::isfinite(se.y[i])) continue;
        points += (points.empty() ? "" : " ") + num(fx(x[i])) + "," + num(fy(se.y[i]));
        dots += "<circle cx=\"" + num(fx(x[i])) + "\" cy=\"" + num(fy(se.y[i])) + "\" r=\"3.5\" fill=\"" +
                xml_escape(se.color) + "\"><title>" + xml_escape(se.name) + " at " + tick_label(x[i]) + ": " +
                tick_label(std::round(se.y[i] * 10) / 10) + "</title></circle>\n";
      }
      if (!points.empty())
        s += "<polyline fill=\"none\" stroke=\"" + xml_escape(se.color) + "\" stroke-width=\"2\"" +
             (se.dashed ? " stroke-dasharray=\"6 4\"" : "") + " points=\"" + points + "\"/>\n";
      s += dots;
      // Legend entry.
      const double ly = top + 10 + static_cast<double>(k) * 20;
      const double lx = kLeft + plot_w + 16;
      s += "<line x1=\"" + num(lx) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly) +
           "\" stroke=\"" + xml_escape(se.color) + "\" stroke-width=\"2\"" +
           (se.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
      s += "<text x=\"" + num(lx + 30) + "\" y=\"" + num(ly + 4) + "\">" + xml_escape(se.name) + "</text>\n";
    }
    s += "</g>\n";
  }
  s += "<text x=\"" + num(kLeft + plot_w / 2) + "\" y=\"" + num(height - 16) + "\" text-anchor=\"middle\">" +
       xml_escape(x_label) + "</text>\n";
  s += "</svg>\n";
  return s;
}

std::string render_bench_chart(const BenchRun& run) {
  std::vector<double> x;
  ChartSeries total{"all streams", "#1f6fb4", false, {}};
  ChartSeries stream{"per stream (mean)", "#1f6fb4", true, {}};
  ChartSeries p50{"p50", "#2a9d3a", false, {}};
  ChartSeries p90{"p90", "#e08a00", false, {}};
  ChartSeries p99{"p99", "#c8322f", false, {}};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const LevelReport& l : run.levels) {
    x.push_back(l.concurrency);
    total.y.push_back(l.succeeded ? l.output_tokens_per_s : nan);
    stream.y.push_back(l.stream_tokens_per_s.count ? l.stream_tokens_per_s.mean : nan);
    p50.y.push_back(l.ttft_ms.count ? l.ttft_ms.p50 : nan);
    p90.y.push_back(l.ttft_ms.count ? l.ttft_ms.p90 : nan);
    p99.y.push_back(l.ttft_ms.count ? l.ttft_ms.p99 : nan);
  }
  const BenchOptions& o = run.options;
  auto range = [](const LengthRange& r) {
    return r.fixed() ? std::to_string(r.min) : std::to_string(r.min) + "-" + std::to_string(r.max);
  };
  const std::string subtitle = run.url.text() + " (" + api_name(o.api) + "), " + std::to_string(o.requests) +
                               " requests per level, prompt " + range(o.prompt_tokens) + " / output " +
                               range(o.max_tokens) + " tokens";
  std::vector<ChartPanel> panels = {
      {"Output throughput", "tokens/s", {total, stream}},
      {"Time to first token", "ms", {p50, p90, p99}},
  };
  return render_svg("tandem bench: " + run.model, subtitle, "concurrent streams", x, panels);
}

}  // namespace tandem::client::bench
