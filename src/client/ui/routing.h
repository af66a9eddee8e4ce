// Where the ui bridge sends a new generate: the healthy backend with the
// least load, or the one a conversation already runs on while it stays
// healthy. Plain data in, a choice out (unit-tested without a network).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tandem::client::ui {

struct RouteCandidate {
  bool healthy = false;  // linked (init answered) and not draining or loading
  std::string model;     // what the backend serves
  // Requests it is busy with relative to its capacity: (the bridge's own in
  // flight + other clients' running and queued) / batch_size.
  double load = 0;
  int own_in_flight = 0;  // tie-break: fewer of ours first
};

// The index of the candidate to use, or nullopt when none is healthy (and, if
// `model` is not empty, serves `model`). Ties go to the lower index.
std::optional<size_t> least_loaded(const std::vector<RouteCandidate>& candidates, const std::string& model);

// conversation id -> backend index, bounded (the oldest half is forgotten
// when it grows past `capacity`).
class StickyConversations {
 public:
  explicit StickyConversations(size_t capacity = 4096) : capacity_(capacity) {}
  // The backend for `conversation`: its remembered one if still a usable
  // candidate, else least_loaded (then remembered). Empty `conversation`:
  // plain least_loaded.
  std::optional<size_t> route(const std::string& conversation, const std::vector<RouteCandidate>& candidates,
                              const std::string& model);
  size_t size() const { return backend_of_.size(); }

 private:
  size_t capacity_;
  uint64_t clock_ = 0;
  struct Entry {
    size_t backend;
    uint64_t last_used;
  };
  std::map<std::string, Entry> backend_of_;
};

}  // namespace tandem::client::ui
