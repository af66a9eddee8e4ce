// The BPE model: turns one pre-tokenized piece into token ids by applying
// merges in rank order (lowest rank first, leftmost first among equals).
//
// Two symbol alphabets:
//   - byte-level: every byte of the piece starts as the id of its
//     byte-level character ("Ġ" for a space);
//   - character-level (SentencePiece style): every UTF-8 character starts as
//     its own id; a character missing from the vocabulary becomes its
//     "<0xXX>" byte tokens (byte_fallback) or the unknown token.
//
// Thread safety: encode_piece() is const and may run from many threads; the
// per-model cache of piece -> ids is guarded by a shared mutex.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/byte_level.h"
#include "tokenizer/vocab.h"

namespace tandem::tok {

struct BpeOptions {
  bool byte_level = false;     // symbols are bytes in the byte-level alphabet
  bool byte_fallback = false;  // unknown characters become <0xXX> tokens
  bool fuse_unk = false;       // consecutive unknown symbols become one
  bool ignore_merges = false;  // a piece that is itself a token is taken whole
  std::optional<int32_t> unk_id;
};

class BpeModel {
 public:
  // `token_to_id` maps vocabulary texts to ids; `merges` are pairs of token
  // texts in rank order. Throws tandem::Error when a merge names a token
  // that is not in the vocabulary.
  // PRECONDITIONS: `token_to_id` outlives the model (it is kept by reference).
  BpeModel(const StringIdMap& token_to_id, const std::vector<std::pair<std::string, std::string>>& merges,
           const BpeOptions& options);

  // Appends the ids of one piece (raw bytes for byte-level models) to `out`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }
  const Merge* find_merge(int32_t a, int32_t b) const {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const;
  void apply_merges(std::vector<int32_t>& symbols) const;
  void apply_merges_long(std::vector<int32_t>& symbols) const;

  const StringIdMap& token_to_id_;
  BpeOptions options_;
  ByteLevelAlphabet alphabet_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};  // id of each byte's token, -1 if none
  StringIdMap raw_token_to_id_;           // byte-level: raw bytes -> id (for ignore_merges)

  // Cache of piece -> ids. Bounded: cleared when it grows past kCacheLimit.
  static constexpr size_t kCacheLimit = 1 << 16;
  static constexpr size_t kCacheMaxPiece = 256;  // bytes; longer pieces are rare
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace tandem::tok
