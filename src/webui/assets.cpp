#include "webui/assets.h"

#include "webui/asset_table.h"

namespace tandem::webui {

const Asset* find_asset(std::string_view path) {
  if (path == "/") path = "/index.html";
  for (const Asset& asset : asset_table()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

std::string_view cache_control(const Asset& asset) {
  if (asset.path.starts_with("/assets/")) return "public, max-age=31536000, immutable";
  return "no-cache";
}

}  // namespace tandem::webui
