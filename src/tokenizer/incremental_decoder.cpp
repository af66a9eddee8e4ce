#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace tandem {

// Default for tokenizers without context-dependent decoders.
void Tokenizer::decode_append(int32_t id, bool skip_special, TokenDecodeState& state,
                              std::string& bytes) const {
  const int32_t one[1] = {id};
  const std::string text = decode(one, skip_special);
  if (!text.empty()) state.text_started = true;
  ++state.tokens_seen;
  bytes += text;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::push(int32_t id) {
  tokenizer_.decode_append(id, skip_special_, state_, pending_);
  // Emit everything but a trailing prefix of a character that may still
  // complete; bytes that can never become valid are replaced now.
  const size_t hold = tok::incomplete_utf8_tail(pending_);
  std::string out = tok::repair_utf8(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = tok::repair_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace tandem
