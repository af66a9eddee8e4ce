// Stop strings over streamed text. Invariant between calls: pending_ is
// shorter than the longest stop string and is the longest suffix of the text
// so far that is a proper prefix of some stop string, so the work per push is
// O((pending + new text) * total stop length) with small constants.
#include <algorithm>

#include "engine/sampler.h"

namespace tandem {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of `stop`.
size_t overlap(std::string_view text, std::string_view stop) {
  for (size_t len = std::min(text.size(), stop.size() - 1); len > 0; --len) {
    if (text.substr(text.size() - len) == stop.substr(0, len)) return len;
  }
  return 0;
}

}  // namespace

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  // Empty strings would match everywhere; they are dropped (validate()
  // rejects them in requests, so this only guards direct callers).
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

StopMatcher::Result StopMatcher::push(std::string_view text) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    return result;
  }
  pending_.append(text);
  // The earliest match wins; held-back text is part of pending_, so a stop
  // string split across pushes is found here too.
  size_t match = std::string::npos;
  for (const std::string& stop : stops_) {
    match = std::min(match, pending_.find(stop));
  }
  if (match != std::string::npos) {
    result.text = pending_.substr(0, match);
    result.stopped = true;
    stopped_ = true;
    pending_.clear();
    return result;
  }
  size_t hold = 0;
  for (const std::string& stop : stops_) hold = std::max(hold, overlap(pending_, stop));
  result.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopMatcher::flush() {
  if (stopped_) return {};
  std::string rest = std::move(pending_);
  pending_.clear();
  return rest;
}

}  // namespace tandem
