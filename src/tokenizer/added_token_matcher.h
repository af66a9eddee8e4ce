// Finds added tokens (special tokens and user-added tokens) in text: at each
// position the longest token that starts there wins, scanning left to right,
// as the reference tokenizer does. Honours lstrip / rstrip / single_word.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer_spec.h"

namespace tandem::tok {

class AddedTokenMatcher {
 public:
  // `tokens` are the tokens to look for; `texts[i]` is the text to match for
  // tokens[i] (its content, or its normalized content).
  AddedTokenMatcher(const std::vector<const AddedToken*>& tokens, const std::vector<std::string>& texts);

  struct Segment {
    std::string_view text;  // for a token: the matched text
    int32_t id = -1;        // -1: plain text to encode
  };
  // Splits `text` into plain-text segments and token segments, in order.
  // White space swallowed by lstrip/rstrip is dropped; empty plain segments
  // are dropped.
  void split(std::string_view text, std::vector<Segment>& out) const;

  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    const AddedToken* token;
    std::string text;
  };
  // Byte trie: node 0 is the root. children_ maps (node << 8 | byte) -> node.
  std::unordered_map<uint64_t, int32_t> children_;
  std::vector<int32_t> terminal_;  // node -> entry index, or -1
  std::vector<Entry> entries_;
  bool first_byte_[256] = {};
};

}  // namespace tandem::tok
