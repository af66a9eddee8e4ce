#include "client/bench/progress.h"

#include <unistd.h>

namespace tandem::client::bench {

std::string progress_line(int concurrency, size_t done, size_t total, size_t failed, double elapsed_s,
                          int64_t output_tokens, int bar_width) {
  const size_t filled = total ? done * static_cast<size_t>(bar_width) / total : 0;
  std::string bar(filled, '#');
  bar.resize(static_cast<size_t>(bar_width), '-');
  char buf[256];
  std::snprintf(buf, sizeof buf, "c=%d [%s] %zu/%zu", concurrency, bar.c_str(), done, total);
  std::string s = buf;
  if (failed) s += "  " + std::to_string(failed) + " failed";
  std::snprintf(buf, sizeof buf, "  %.1f s  %.0f tok/s", elapsed_s,
                elapsed_s > 0 ? static_cast<double>(output_tokens) / elapsed_s : 0.0);
  return s + buf;
}

Progress::Progress(bool quiet, std::FILE* out) : quiet_(quiet), terminal_(isatty(fileno(out)) == 1), out_(out) {}

void Progress::note(const std::string& line) {
  if (quiet_) return;
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void Progress::start_level(int concurrency, size_t total) {
  concurrency_ = concurrency;
  total_ = total;
  start_ = std::chrono::steady_clock::now();
  last_draw_ = {};
  if (quiet_) return;
  if (terminal_) draw(0, 0, 0);
  else note("level c=" + std::to_string(concurrency) + ": " + std::to_string(total) + " requests");
}

void Progress::update(size_t done, size_t failed, int64_t output_tokens) {
  if (quiet_ || !terminal_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && done < total_) return;
  draw(done, failed, output_tokens);
}

void Progress::finish_level(size_t done, size_t failed, int64_t output_tokens) {
  if (quiet_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string line = progress_line(concurrency_, done, total_, failed, elapsed, output_tokens, 20);
  if (terminal_) std::fprintf(out_, "\r\033[K%s\n", line.c_str());
  else std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void Progress::draw(size_t done, size_t failed, int64_t output_tokens) {
  last_draw_ = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(last_draw_ - start_).count();
  std::fprintf(out_, "\r\033[K%s", progress_line(concurrency_, done, total_, failed, elapsed, output_tokens, 20).c_str());
  std::fflush(out_);
}

}  // namespace tandem::client::bench
