// One error type for everything a user can act on: a bad file, a bad request,
// a budget that does not fit. The message says what is wrong and, where it can,
// what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace tandem {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws tandem::Error with `message` when `condition` is false. Use for
// conditions that depend on input (files, requests, flags), never for bugs.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace tandem
