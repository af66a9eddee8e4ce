// Everything that defines a BPE tokenizer, in one plain struct. Both loaders
// (tokenizer.json, GGUF metadata) produce it; BpeTokenizer runs it; the GGUF
// writer serialises it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/pipeline.h"

namespace tandem::tok {

enum class ModelKind { kByteLevelBpe, kSentencePieceBpe };

// A token matched in the raw text before the model runs (special tokens such
// as "<|im_start|>" and user-added tokens such as "<think>").
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // swallow white space on the left
  bool rstrip = false;       // swallow white space on the right
  bool single_word = false;  // match only as a whole word
  bool normalized = false;   // matched in normalized text rather than raw text
};

// GGUF token types (tokenizer.ggml.token_type).
enum class GgufTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizerSpec {
  ModelKind kind = ModelKind::kByteLevelBpe;
  std::string source;                                     // file name, for messages
  std::vector<std::string> tokens;                        // id -> vocabulary text
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::optional<int32_t> unk_id, bos_id, eos_id, pad_id;

  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  std::vector<AddedToken> added_tokens;

  // Ids the post-processor puts around the text when add_special is true.
  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;
};

}  // namespace tandem::tok
