#include "tokenizer/added_token_matcher.h"

#include "tokenizer/utf8.h"

namespace tandem::tok {

namespace {

bool is_word_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || c == '_' ||
         u >= 0x80;
}

// Length of the white space run at the start / end of `s`.
size_t leading_space(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_unicode_whitespace(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

size_t trailing_space(std::string_view s) {
  size_t pos = 0, run_start = s.size();
  bool in_run = false;
  while (pos < s.size()) {
    const size_t at = pos;
    const bool ws = is_unicode_whitespace(next_code_point(s, pos));
    if (ws && !in_run) run_start = at;
    in_run = ws;
  }
  return in_run ? s.size() - run_start : 0;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<const AddedToken*>& tokens,
                                     const std::vector<std::string>& texts) {
  terminal_.push_back(-1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& text = texts[i];
    if (text.empty()) continue;
    int32_t node = 0;
    for (char c : text) {
      const uint64_t key = (uint64_t(uint32_t(node)) << 8) | static_cast<uint8_t>(c);
      auto it = children_.find(key);
      if (it == children_.end()) {
        it = children_.emplace(key, static_cast<int32_t>(terminal_.size())).first;
        terminal_.push_back(-1);
      }
      node = it->second;
    }
    if (terminal_[node] < 0) {  // the first token with a given text wins
      terminal_[node] = static_cast<int32_t>(entries_.size());
      entries_.push_back({tokens[i], text});
    }
    first_byte_[static_cast<uint8_t>(text[0])] = true;
  }
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  out.clear();
  size_t plain_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    // Longest token starting at i.
    int32_t node = 0;
    int32_t best = -1;
    size_t best_len = 0;
    for (size_t j = i; j < text.size(); ++j) {
      const uint64_t key = (uint64_t(uint32_t(node)) << 8) | static_cast<uint8_t>(text[j]);
      const auto it = children_.find(key);
      if (it == children_.end()) break;
      node = it->second;
      if (terminal_[node] >= 0) {
        best = terminal_[node];
        best_len = j + 1 - i;
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = *entries_[best].token;
    if (tok.single_word) {
      const bool left_ok = i == 0 || !is_word_byte(text[i - 1]);
      const bool right_ok = i + best_len >= text.size() || !is_word_byte(text[i + best_len]);
      if (!left_ok || !right_ok) {
        ++i;
        continue;
      }
    }
    std::string_view plain = text.substr(plain_start, i - plain_start);
    if (tok.lstrip) plain.remove_suffix(trailing_space(plain));
    if (!plain.empty()) out.push_back({plain, -1});
    out.push_back({text.substr(i, best_len), tok.id});
    i += best_len;
    if (tok.rstrip) i += leading_space(text.substr(i));
    plain_start = i;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start), -1});
}

}  // namespace tandem::tok
