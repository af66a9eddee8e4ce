// A progress bar on stderr while the model's weights load: bytes, rate and
// time left, redrawn in place a few times a second from a LoadProgress that
// the loader updates. Drawn only when stderr is a terminal.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

#include "common/load_progress.h"

namespace tandem::cli {

// "812 MB", "13.40 GB" (10^6 and 10^9 bytes).
std::string bytes_text(double bytes);

// One line, e.g. "loading weights [#######.............] 4.20 GB / 12.00 GB  1.35 GB/s  ETA 6s".
// `width` is the number of cells in the bar.
std::string format_load_progress(uint64_t done, uint64_t total, double elapsed_s, int width = 30);

class LoadProgressBar {
 public:
  // Starts drawing to `out` when `draw` is true (pass isatty(fileno(out))).
  LoadProgressBar(const LoadProgress& progress, std::FILE* out, bool draw);
  // Stops drawing and ends the line (draws the final state first).
  ~LoadProgressBar();
  LoadProgressBar(const LoadProgressBar&) = delete;
  LoadProgressBar& operator=(const LoadProgressBar&) = delete;

  void finish();

 private:
  void draw_once(bool last);

  const LoadProgress& progress_;
  std::FILE* out_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool drew_ = false;
  std::thread thread_;
};

}  // namespace tandem::cli
