// The embedded web UI: every file of web/dist is in the table, byte for byte,
// with the content type and cache policy the server sends.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "webui/asset_table.h"
#include "webui/assets.h"

namespace tandem::webui {
namespace {

namespace fs = std::filesystem;

const fs::path kDist = fs::path(TANDEM_SOURCE_DIR) / "web" / "dist";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(WebUiAssets, RootIsIndexHtml) {
  const Asset* root = find_asset("/");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root, find_asset("/index.html"));
  EXPECT_EQ(root->content_type, "text/html; charset=utf-8");
  EXPECT_NE(root->body.find("<!doctype html>"), std::string_view::npos);
  EXPECT_EQ(cache_control(*root), "no-cache");
}

TEST(WebUiAssets, EveryDistFileIsEmbeddedByteForByte) {
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kDist)) {
    if (!entry.is_regular_file()) continue;
    const std::string path = "/" + fs::relative(entry.path(), kDist).generic_string();
    const Asset* asset = find_asset(path);
    ASSERT_NE(asset, nullptr) << path;
    EXPECT_EQ(asset->body, read_file(entry.path())) << path;
    EXPECT_FALSE(asset->gzip);
    files++;
  }
  EXPECT_EQ(files, asset_table().size());
}

TEST(WebUiAssets, HashedAssetsAreImmutableWithTheirTypes) {
  int scripts = 0, styles = 0;
  for (const Asset& a : asset_table()) {
    if (!a.path.starts_with("/assets/")) continue;
    EXPECT_EQ(cache_control(a), "public, max-age=31536000, immutable") << a.path;
    if (a.path.ends_with(".js")) {
      EXPECT_EQ(a.content_type, "text/javascript; charset=utf-8");
      scripts++;
    }
    if (a.path.ends_with(".css")) {
      EXPECT_EQ(a.content_type, "text/css; charset=utf-8");
      styles++;
    }
  }
  EXPECT_GE(scripts, 1);
  EXPECT_GE(styles, 1);
}

TEST(WebUiAssets, UnknownPathsAreNotAssets) {
  EXPECT_EQ(find_asset("/health"), nullptr);
  EXPECT_EQ(find_asset("/v1/status"), nullptr);
  EXPECT_EQ(find_asset("/ws"), nullptr);
  EXPECT_EQ(find_asset(""), nullptr);
  EXPECT_EQ(find_asset("index.html"), nullptr);  // paths start with '/'
  EXPECT_EQ(find_asset("/assets/"), nullptr);
  EXPECT_EQ(find_asset("/../web/dist/index.html"), nullptr);
}

}  // namespace
}  // namespace tandem::webui
