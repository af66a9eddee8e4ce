// The web UI's files (web/dist), compiled into the binary at build time so
// that serving the UI needs no Node.js and no files on disk.
#pragma once

#include <string_view>

namespace tandem::webui {

struct Asset {
  std::string_view path;          // "/index.html", "/assets/index-3f2a.js"
  std::string_view content_type;  // "text/html; charset=utf-8"
  std::string_view body;          // the file's bytes (gzip-compressed when gzip is true)
  bool gzip;                      // body is gzip: send it with Content-Encoding: gzip
};

// The asset served at `path` (query string already removed), or nullptr.
// "/" maps to "/index.html".
const Asset* find_asset(std::string_view path);

// The Cache-Control value for an asset: files whose names carry a content
// hash (under /assets/) never change, so browsers may keep them for a year;
// everything else (index.html) is revalidated on every load.
std::string_view cache_control(const Asset& asset);

}  // namespace tandem::webui
