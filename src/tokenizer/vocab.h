// Token id <-> text tables, with lookups by string_view (no copies).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tandem::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

inline std::optional<int32_t> find_id(const StringIdMap& map, std::string_view text) {
  const auto it = map.find(text);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

}  // namespace tandem::tok
