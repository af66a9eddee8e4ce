// Parsing JSON that comes from the network. Copying or comparing a parsed
// document recurses once per nesting level, so a client could overflow a
// thread's stack with a few kilobytes of brackets; documents nested deeper
// than kMaxJsonDepth are refused before they are parsed.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace tandem::server {

inline constexpr int kMaxJsonDepth = 64;

// Nesting depth of arrays and objects in `text`, brackets inside strings not
// counted; stops counting once `limit` is passed.
int json_nesting_depth(std::string_view text, int limit = kMaxJsonDepth + 1);

// The parsed document, or a discarded value when `text` is not JSON (or not
// UTF-8). Throws ApiError 400 "invalid_request" when it nests too deep.
nlohmann::json parse_network_json(std::string_view text);

}  // namespace tandem::server
