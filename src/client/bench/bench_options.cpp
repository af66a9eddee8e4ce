#include "client/bench/bench_options.h"

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace tandem::client::bench {
namespace {

bool parse_int(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

std::string BackendUrl::text() const { return scheme + "://" + host + ":" + port + base_path; }

LengthRange parse_length_range(const std::string& text, const std::string& flag, int64_t min_allowed) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument(flag + " '" + text + "': " + why +
                                 " (give a token count like 128, or a range MIN:MAX like 64:256)");
  };
  LengthRange r;
  const size_t colon = text.find(':');
  if (colon == std::string::npos) {
    if (!parse_int(text, r.min)) throw bad("not a whole number");
    r.max = r.min;
  } else {
    if (!parse_int(std::string_view(text).substr(0, colon), r.min) ||
        !parse_int(std::string_view(text).substr(colon + 1), r.max))
      throw bad("not a whole number or range");
    if (r.min > r.max) throw bad("MIN is larger than MAX");
  }
  if (r.min < min_allowed) throw bad("must be at least " + std::to_string(min_allowed));
  return r;
}

std::vector<int> parse_concurrency_list(const std::string& text) {
  std::vector<int> levels;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    int64_t v = 0;
    if (!parse_int(item, v) || v < 1 || v > 100000)
      throw std::invalid_argument("--concurrency '" + text + "': '" + item +
                                  "' is not a level from 1 to 100000 (give a list like 1,4,16,64)");
    if (std::find(levels.begin(), levels.end(), v) != levels.end())
      throw std::invalid_argument("--concurrency '" + text + "': level " + item + " appears twice");
    levels.push_back(static_cast<int>(v));
    start = comma + 1;
  }
  return levels;
}

BackendUrl parse_backend_url(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("--backend '" + text + "': " + why + " (expected e.g. http://127.0.0.1:8765)");
  };
  BackendUrl u;
  const size_t sep = text.find("://");
  if (sep == std::string::npos) throw bad("no scheme");
  u.scheme = text.substr(0, sep);
  std::transform(u.scheme.begin(), u.scheme.end(), u.scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (u.scheme == "https" || u.scheme == "wss") throw bad("TLS is not supported by this client; use http:// or ws://");
  if (u.scheme != "http" && u.scheme != "ws") throw bad("the scheme must be http or ws");
  std::string rest = text.substr(sep + 3);
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  if (authority.empty()) throw bad("no host");
  if (authority.find('@') != std::string::npos) throw bad("user info in the URL is not supported; use --api-key");
  if (authority.front() == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) throw bad("unclosed [ in the host");
    u.host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') throw bad("junk after the host");
    u.port = after.empty() ? "" : after.substr(1);
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    u.port = colon == std::string::npos ? "" : authority.substr(colon + 1);
  }
  if (u.host.empty()) throw bad("no host");
  if (u.port.empty()) u.port = "80";
  int64_t port = 0;
  if (!parse_int(u.port, port) || port < 1 || port > 65535) throw bad("the port must be 1-65535");
  if (path.find_first_of("?#") != std::string::npos) throw bad("a query or fragment is not supported");
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/ws") == 0) path.resize(path.size() - 3);
  u.base_path = path;
  return u;
}

std::string api_name(Api api) { return api == Api::kTandem ? "tandem" : "openai"; }

}  // namespace tandem::client::bench
