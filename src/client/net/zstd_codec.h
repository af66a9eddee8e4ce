// zstd for WebSocket messages (docs/PROTOCOL.md, Compression): a binary
// message holds exactly one zstd frame of JSON text, with its content size in
// the frame header.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tandem::client::net {

// Messages at least this long go compressed when the peer asked for zstd.
constexpr size_t kCompressThreshold = 512;
// The protocol's largest message.
constexpr size_t kMaxMessageBytes = size_t{4} << 20;

// One complete frame (level 3). Throws NetError if zstd fails.
std::string zstd_compress(std::string_view data);
// Throws NetError for a frame without a known content size, one over
// `max_size` bytes, or corrupt data.
std::string zstd_decompress(std::string_view frame, size_t max_size = kMaxMessageBytes);

}  // namespace tandem::client::net
