// The loading progress line: bar cells, sizes, rate and time left; and the
// bar drawing in place to a stream only when asked to.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/load_progress_bar.h"

namespace tandem::cli {
namespace {

TEST(LoadProgressBar, FormatsBytesRateAndEta) {
  EXPECT_EQ(bytes_text(812e6), "812.0 MB");
  EXPECT_EQ(bytes_text(13.4e9), "13.40 GB");
  EXPECT_EQ(format_load_progress(0, 10'000'000'000, 0.0, 10), "loading weights [..........] 0.0 MB / 10.00 GB");
  // Half done in 2 s: 2.5 GB/s, 2 s to go.
  EXPECT_EQ(format_load_progress(5'000'000'000, 10'000'000'000, 2.0, 10),
            "loading weights [#####.....] 5.00 GB / 10.00 GB  2.50 GB/s  ETA 2.0s");
  EXPECT_EQ(format_load_progress(1'000'000'000, 100'000'000'000, 1.0, 10),
            "loading weights [..........] 1.00 GB / 100.00 GB  1.00 GB/s  ETA 1m39s");
  EXPECT_EQ(format_load_progress(13'400'000, 13'400'000, 0.5, 4), "loading weights [####] 13.4 MB / 13.4 MB  26.8 MB/s  in 0.5s");
}

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

TEST(LoadProgressBar, RedrawsInPlaceAndEndsTheLine) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  LoadProgress progress;
  progress.bytes_total = 2'000'000;
  progress.bytes_done = 1'000'000;  // before the bar: its first draw shows it
  {
    LoadProgressBar bar(progress, f, true);
    // Redraws every 200 ms: a second leaves room for a thread that starts late.
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    progress.bytes_done = 2'000'000;
    bar.finish();
  }
  const std::string out = read_all(f);
  EXPECT_GE(std::count(out.begin(), out.end(), '\r'), 2) << out;  // drawn while it ran, and once at the end
  EXPECT_NE(out.find("1.0 MB / 2.0 MB"), std::string::npos) << out;
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_NE(out.rfind("2.0 MB / 2.0 MB"), std::string::npos) << out;
  std::fclose(f);
}

TEST(LoadProgressBar, DrawsNothingWhenNotAsked) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  LoadProgress progress;
  progress.bytes_total = 100;
  {
    LoadProgressBar bar(progress, f, false);
    progress.bytes_done = 100;
  }
  EXPECT_EQ(read_all(f), "");
  std::fclose(f);
}

}  // namespace
}  // namespace tandem::cli
