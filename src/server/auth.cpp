#include "server/auth.h"

namespace tandem::server {

bool key_matches(const std::string& configured, std::string_view given) {
  if (configured.empty()) return true;
  unsigned diff = configured.size() == given.size() ? 0u : 1u;
  for (size_t i = 0; i < configured.size(); ++i) {
    const char g = i < given.size() ? given[i] : '\0';
    diff |= static_cast<unsigned char>(configured[i]) ^ static_cast<unsigned char>(g);
  }
  return diff == 0;
}

bool bearer_authorized(const std::string& configured, std::string_view authorization) {
  if (configured.empty()) return true;
  constexpr std::string_view prefix = "Bearer ";
  if (authorization.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    const char a = authorization[i], b = prefix[i];
    if ((a | 0x20) != (b | 0x20)) return false;
  }
  std::string_view key = authorization.substr(prefix.size());
  while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
  return key_matches(configured, key);
}

}  // namespace tandem::server
