// Helpers shared by the format readers and writers (internal to src/formats).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::formats {

// Makes a name read from an untrusted file safe to put in a one-line error
// message: control and non-ASCII bytes become \xNN, and long names are cut.
std::string printable(std::string_view s, size_t max_len = 80);

// Rounds `v` up to a multiple of `alignment` (a power of two). Returns false
// when the result does not fit in 64 bits.
bool align_up(uint64_t v, uint64_t alignment, uint64_t* out);

inline bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Writes a file through a temporary beside it and renames it into place on
// commit(), so that a failed write (bad path, disk full) never leaves a
// truncated file under the final name. Every failure throws tandem::Error
// naming `path`. Destroying an uncommitted writer removes the temporary.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  uint64_t bytes_written() const { return written_; }
  // Flushes, syncs, closes and renames the temporary onto `path`.
  void commit();

 private:
  void flush();
  [[noreturn]] void fail(const char* action, int err);

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  std::vector<uint8_t> buffer_;  // pending bytes, flushed when full
  uint64_t written_ = 0;
  bool committed_ = false;
};

// Reads a whole small file (JSON configs). Throws tandem::Error naming the
// path when it cannot be read or is larger than `max_bytes`.
std::string read_small_file(const std::string& path, uint64_t max_bytes);

}  // namespace tandem::formats
