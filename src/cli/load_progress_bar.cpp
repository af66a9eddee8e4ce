#include "cli/load_progress_bar.h"

#include <algorithm>
#include <cmath>

namespace tandem::cli {
namespace {

std::string duration_text(double s) {
  char buf[32];
  if (s < 10) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) / 60 % 60);
  return buf;
}

}  // namespace

std::string bytes_text(double bytes) {
  char buf[32];
  if (bytes >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  return buf;
}

std::string format_load_progress(uint64_t done, uint64_t total, double elapsed_s, int width) {
  const double fraction = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 0.0;
  const int filled = static_cast<int>(std::floor(fraction * width));
  std::string line = "loading weights [" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
  line += " " + bytes_text(static_cast<double>(done)) + " / " + bytes_text(static_cast<double>(total));
  const double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0.0;  // bytes/s
  if (rate > 0) {
    line += "  " + bytes_text(rate) + "/s";
    if (done < total) line += "  ETA " + duration_text(static_cast<double>(total - done) / rate);
    else line += "  in " + duration_text(elapsed_s);
  }
  return line;
}

LoadProgressBar::LoadProgressBar(const LoadProgress& progress, std::FILE* out, bool draw)
    : progress_(progress), out_(out) {
  if (!draw) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      draw_once(false);
      wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_; });
    }
  });
}

LoadProgressBar::~LoadProgressBar() { finish(); }

void LoadProgressBar::finish() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  draw_once(true);
}

void LoadProgressBar::draw_once(bool last) {
  const uint64_t total = progress_.bytes_total.load();
  if (total == 0 && !drew_) return;  // nothing counted yet
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  // "\r" returns to the line start; "\033[K" clears what a longer line left.
  std::fprintf(out_, "\r%s\033[K%s", format_load_progress(progress_.bytes_done.load(), total, elapsed).c_str(),
               last ? "\n" : "");
  std::fflush(out_);
  drew_ = true;
}

}  // namespace tandem::cli
