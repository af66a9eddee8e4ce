#include "client/ui/routing.h"

#include <algorithm>

namespace tandem::client::ui {

namespace {
bool usable(const RouteCandidate& c, const std::string& model) {
  return c.healthy && (model.empty() || c.model == model);
}
}  // namespace

std::optional<size_t> least_loaded(const std::vector<RouteCandidate>& candidates, const std::string& model) {
  std::optional<size_t> best;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const RouteCandidate& c = candidates[i];
    if (!usable(c, model)) continue;
    if (!best) {
      best = i;
      continue;
    }
    const RouteCandidate& b = candidates[*best];
    if (c.load < b.load || (c.load == b.load && c.own_in_flight < b.own_in_flight)) best = i;
  }
  return best;
}

std::optional<size_t> StickyConversations::route(const std::string& conversation,
                                                 const std::vector<RouteCandidate>& candidates,
                                                 const std::string& model) {
  if (conversation.empty()) return least_loaded(candidates, model);
  ++clock_;
  auto it = backend_of_.find(conversation);
  if (it != backend_of_.end() && it->second.backend < candidates.size() &&
      usable(candidates[it->second.backend], model)) {
    it->second.last_used = clock_;
    return it->second.backend;
  }
  const std::optional<size_t> chosen = least_loaded(candidates, model);
  if (!chosen) return chosen;
  backend_of_[conversation] = {*chosen, clock_};
  if (backend_of_.size() > capacity_) {
    // Forget the least recently used half.
    std::vector<uint64_t> stamps;
    for (const auto& [k, e] : backend_of_) stamps.push_back(e.last_used);
    std::nth_element(stamps.begin(), stamps.begin() + stamps.size() / 2, stamps.end());
    const uint64_t cut = stamps[stamps.size() / 2];
    for (auto i = backend_of_.begin(); i != backend_of_.end();)
      i = i->second.last_used < cut ? backend_of_.erase(i) : std::next(i);
  }
  return chosen;
}

}  // namespace tandem::client::ui
