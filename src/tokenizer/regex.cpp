#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/error.h"

namespace tandem::tok {

namespace {

// RAII for per-call match data.
struct MatchData {
  explicit MatchData(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(data); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* data;
};

}  // namespace

namespace {

// Escapes every ASCII punctuation character so that `text` matches itself.
// (PCRE2_LITERAL cannot be combined with PCRE2_MATCH_INVALID_UTF.)
std::string escape_literal(const std::string& text) {
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    const bool plain = u >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (c == '\0') {
      out += "\\x{0}";
      continue;
    }
    if (!plain) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal) : pattern_(pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
  const std::string source = literal ? escape_literal(pattern) : pattern;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw Error("tokenizer regex '" + pattern + "' does not compile at offset " +
                std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
  }
  code_ = code;
  // JIT is an optimisation only; the interpreter gives the same matches.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  const auto* code = static_cast<const pcre2_code*>(code_);
  MatchData md(code);
  if (md.data == nullptr) throw Error("out of memory creating regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), offset, 0, md.data, nullptr)
                        : pcre2_match(code, subject, text.size(), offset, 0, md.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw Error("tokenizer regex '" + pattern_ + "' failed: " +
                  reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    const size_t begin = ov[0];
    const size_t end = ov[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      offset = end;
    } else {
      // Empty match: step over one whole character (or one bad byte).
      if (begin >= text.size()) break;
      size_t step = 1;
      while (begin + step < text.size() &&
             (static_cast<uint8_t>(text[begin + step]) & 0xC0) == 0x80 && step < 4)
        ++step;
      offset = begin + step;
    }
  }
  return matches;
}

}  // namespace tandem::tok
