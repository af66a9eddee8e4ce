#include "formats/format_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"

namespace tandem::formats {

std::string printable(std::string_view s, size_t max_len) {
  std::string out;
  out.reserve(std::min(s.size(), max_len) + 8);
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool align_up(uint64_t v, uint64_t alignment, uint64_t* out) {
  const uint64_t rem = v & (alignment - 1);
  if (rem == 0) {
    *out = v;
    return true;
  }
  const uint64_t pad = alignment - rem;
  if (v > UINT64_MAX - pad) return false;
  *out = v + pad;
  return true;
}

namespace {
constexpr size_t kBufferBytes = size_t{1} << 20;
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  tmp_path_ = path_ + ".tmp.XXXXXX";
  fd_ = ::mkstemp(tmp_path_.data());
  if (fd_ < 0) {
    const int err = errno;
    throw Error("cannot write '" + path_ + "': cannot create a temporary file beside it: " +
                std::strerror(err));
  }
  // mkstemp makes the file private (0600); a model file is ordinary data.
  ::fchmod(fd_, 0644);
  buffer_.reserve(kBufferBytes);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

void AtomicFileWriter::fail(const char* action, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_path_.c_str());
  committed_ = true;  // nothing left for the destructor to clean up
  throw Error("cannot write '" + path_ + "': " + action + " failed after " + std::to_string(written_) +
              " bytes: " + std::strerror(err));
}

void AtomicFileWriter::flush() {
  const uint8_t* p = buffer_.data();
  size_t left = buffer_.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    if (n == 0) fail("write", EIO);
    p += n;
    left -= static_cast<size_t>(n);
  }
  buffer_.clear();
}

void AtomicFileWriter::write(const void* data, size_t n) {
  if (committed_) throw Error("cannot write '" + path_ + "': the file was already committed");
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const size_t take = std::min(n, kBufferBytes - buffer_.size());
    buffer_.insert(buffer_.end(), p, p + take);
    p += take;
    n -= take;
    written_ += take;
    if (buffer_.size() == kBufferBytes) flush();
  }
}

void AtomicFileWriter::write_zeros(size_t n) {
  static constexpr uint8_t kZeros[64] = {};
  while (n > 0) {
    const size_t take = std::min(n, sizeof(kZeros));
    write(kZeros, take);
    n -= take;
  }
}

void AtomicFileWriter::commit() {
  if (committed_) throw Error("cannot write '" + path_ + "': the file was already committed");
  flush();
  if (::fsync(fd_) != 0) fail("fsync", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close", errno);
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) fail("rename", errno);
  committed_ = true;
}

std::string read_small_file(const std::string& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("'" + path + "' is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error("'" + path + "' is " + std::to_string(st.st_size) + " bytes, more than the " +
                std::to_string(max_bytes) + " this file may have; it is probably not what it claims to be");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      throw Error("cannot read '" + path + "': " + std::strerror(err));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

}  // namespace tandem::formats
