// API keys: "Authorization: Bearer KEY" on HTTP, "api_key" at WebSocket init.
#pragma once

#include <string>
#include <string_view>

namespace tandem::server {

// True when no key is configured or `given` equals it. The comparison takes
// the same time wherever the first difference is (no timing oracle).
bool key_matches(const std::string& configured, std::string_view given);
// Checks an Authorization header value ("Bearer KEY").
bool bearer_authorized(const std::string& configured, std::string_view authorization);

}  // namespace tandem::server
