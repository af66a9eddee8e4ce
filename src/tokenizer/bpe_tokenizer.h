// The Tokenizer implementation for both supported kinds: added-token
// splitting, normalizers, pre-tokenizers, the BPE model, post-processor ids,
// and decoders, all as a TokenizerSpec declares them.
//
// Thread safety: every const method may be called from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/added_token_matcher.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_spec.h"
#include "tokenizer/vocab.h"

namespace tandem::tok {

class BpeTokenizer final : public Tokenizer {
 public:
  // Throws tandem::Error (naming spec.source) when the spec is inconsistent.
  explicit BpeTokenizer(TokenizerSpec spec);

  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const override;
  void decode_append(int32_t id, bool skip_special, TokenDecodeState& state,
                     std::string& bytes) const override;

  size_t vocab_size() const override { return spec_.tokens.size(); }
  const std::string& token_text(int32_t id) const override;
  std::optional<int32_t> token_id(std::string_view token_text) const override;
  bool is_special(int32_t id) const override;

  std::optional<int32_t> bos_id() const override { return spec_.bos_id; }
  std::optional<int32_t> eos_id() const override { return spec_.eos_id; }
  std::vector<int32_t> stop_ids() const override;
  std::string kind_name() const override;
  std::string bos_text() const override;
  std::string eos_text() const override;

  void write_gguf_metadata(gguf::GgufWriter& writer) const override;

  const TokenizerSpec& spec() const { return spec_; }

 private:
  void encode_plain(std::string_view text, size_t section_index, std::vector<int32_t>& out) const;

  TokenizerSpec spec_;
  StringIdMap token_to_id_;
  std::vector<uint8_t> token_flags_;  // per id: kAdded | kSpecial
  static constexpr uint8_t kAdded = 1, kSpecial = 2;
  ByteLevelAlphabet alphabet_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedTokenMatcher> raw_matcher_;         // tokens with normalized = false
  std::unique_ptr<AddedTokenMatcher> normalized_matcher_;  // tokens with normalized = true
};

}  // namespace tandem::tok
