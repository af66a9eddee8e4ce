#include "server/zstd_frame.h"

#include <zstd.h>

#include "common/error.h"

namespace tandem::server {

std::string zstd_compress(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  check(!ZSTD_isError(n), std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string zstd_decompress(std::string_view frame, size_t max_size) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  check(size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN, "not a zstd frame with a known size");
  check(size <= max_size, "zstd frame holds " + std::to_string(size) + " bytes, over the limit");
  std::string out(static_cast<size_t>(size), '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  check(!ZSTD_isError(n), std::string("zstd decompression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

}  // namespace tandem::server
