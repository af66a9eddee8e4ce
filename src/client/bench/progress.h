// Progress while a benchmark runs, on stderr. On a terminal: one bar that
// redraws in place (at most 10 times a second). Otherwise (a log, a pipe): a
// plain line when each level starts and ends. `quiet` prints nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace tandem::client::bench {

// "c=16 [########------------]  40/100  2 failed  12.3 s  815 tok/s"
std::string progress_line(int concurrency, size_t done, size_t total, size_t failed, double elapsed_s,
                          int64_t output_tokens, int bar_width);

class Progress {
 public:
  Progress(bool quiet, std::FILE* out);
  bool on_terminal() const { return terminal_; }

  void note(const std::string& line);
  void start_level(int concurrency, size_t total);
  void update(size_t done, size_t failed, int64_t output_tokens);
  void finish_level(size_t done, size_t failed, int64_t output_tokens);

 private:
  void draw(size_t done, size_t failed, int64_t output_tokens);

  bool quiet_;
  bool terminal_;
  std::FILE* out_;
  int concurrency_ = 0;
  size_t total_ = 0;
  std::chrono::steady_clock::time_point start_{};
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace tandem::client::bench
