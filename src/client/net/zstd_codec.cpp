#include "client/net/zstd_codec.h"

#include <zstd.h>

#include "client/net/net_error.h"

namespace tandem::client::net {

std::string zstd_compress(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  if (ZSTD_isError(n)) throw NetError(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string zstd_decompress(std::string_view frame, size_t max_size) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
    throw NetError("a binary message is not a zstd frame with a known content size");
  if (size > max_size)
    throw NetError("a zstd message holds " + std::to_string(size) + " bytes, over the limit of " +
                   std::to_string(max_size));
  std::string out(static_cast<size_t>(size), '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) throw NetError(std::string("zstd decompression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

}  // namespace tandem::client::net
