#include "client/net/url.h"

#include <charconv>

#include "client/net/net_error.h"

namespace tandem::client::net {

std::string BackendUrl::host_port() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + port;
}
std::string BackendUrl::ws() const { return "ws://" + host_port() + ws_path; }
std::string BackendUrl::http() const { return "http://" + host_port(); }

BackendUrl parse_backend_url(std::string_view text) {
  const std::string original(text);
  auto fail = [&](const std::string& why) -> NetError {
    return NetError("bad backend address '" + original + "': " + why +
                    " (write it as ws://HOST:PORT, http://HOST:PORT or HOST:PORT)");
  };
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (text.empty()) throw fail("it is empty");
  const size_t scheme_end = text.find("://");
  if (scheme_end != std::string_view::npos) {
    const std::string_view scheme = text.substr(0, scheme_end);
    if (scheme == "wss" || scheme == "https") throw fail("TLS (" + std::string(scheme) + "://) is not supported yet");
    if (scheme != "ws" && scheme != "http") throw fail("unknown scheme '" + std::string(scheme) + "'");
    text.remove_prefix(scheme_end + 3);
  }
  BackendUrl url;
  // A bare port ("8765") means this machine.
  if (text.find_first_not_of("0123456789") == std::string_view::npos) return parse_backend_url("127.0.0.1:" + std::string(text));
  std::string_view authority = text;
  std::string_view path;
  const size_t slash = text.find('/');
  if (slash != std::string_view::npos) {
    authority = text.substr(0, slash);
    path = text.substr(slash);
  }
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) throw fail("an IPv6 address needs a closing ']'");
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw fail("expected ':PORT' after the IPv6 address");
      port = rest.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) throw fail("no host");
  if (url.host.find_first_of("@ ") != std::string::npos) throw fail("the host has a character not allowed there");
  if (port.empty()) {
    url.port = "8765";
  } else {
    int value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535)
      throw fail("the port must be a number from 1 to 65535");
    url.port = std::to_string(value);
  }
  // "/" and "" mean the server root; the WebSocket protocol lives at /ws there.
  url.ws_path = (path.empty() || path == "/") ? "/ws" : std::string(path);
  return url;
}

}  // namespace tandem::client::net
