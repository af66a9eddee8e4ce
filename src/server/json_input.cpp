#include "server/json_input.h"

#include <string>

#include "server/api_error.h"

namespace tandem::server {

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth && (max_depth = depth) > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

nlohmann::json parse_network_json(std::string_view text) {
  if (json_nesting_depth(text) > kMaxJsonDepth)
    throw ApiError(400, "invalid_request",
                   "the JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  return nlohmann::json::parse(text, nullptr, false);
}

}  // namespace tandem::server
