// A compiled PCRE2 pattern (UTF + UCP, JIT when the library has it) used by
// pre-tokenizers and normalizers. Matching is const and thread-safe: each
// call allocates its own match data.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::tok {

class Regex {
 public:
  // `literal` compiles the pattern as a plain string. Throws tandem::Error
  // quoting the pattern and PCRE2's message when it does not compile.
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping, non-empty match of the pattern in `text`, as
  // [begin, end) byte offsets, left to right. Ill-formed UTF-8 in `text` never
  // matches (PCRE2_MATCH_INVALID_UTF) but does not stop the scan.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace tandem::tok
