// zstd for WebSocket messages (docs/PROTOCOL.md): one message, one zstd frame.
#pragma once

#include <string>
#include <string_view>

namespace tandem::server {

// One complete zstd frame holding `data` (level 3: fast, and text compresses
// well at it). Throws tandem::Error if zstd fails.
std::string zstd_compress(std::string_view data);
// Inverse of zstd_compress, for tests; refuses output over `max_size`.
std::string zstd_decompress(std::string_view frame, size_t max_size);

}  // namespace tandem::server
