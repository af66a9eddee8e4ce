// The text-processing stages a tokenizer.json declares around its model:
// normalizers (text -> text), pre-tokenizers (text -> pieces) and decoders
// (token texts -> text). Each stage is plain data; the functions here run
// them. Loaders (tokenizer.json, GGUF) build these from their own formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

namespace tandem::tok {

struct Normalizer {
  enum class Kind { kNfc, kPrepend, kReplace, kStrip };
  Kind kind = Kind::kNfc;
  std::string text;                      // kPrepend: the prefix; kReplace: the replacement
  std::shared_ptr<const Regex> pattern;  // kReplace
  bool strip_left = false;               // kStrip
  bool strip_right = false;              // kStrip
};

// Runs `normalizers` in order.
std::string normalize(const std::vector<Normalizer>& normalizers, std::string_view text);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel, kMetaspace, kDigits };
  Kind kind = Kind::kSplit;
  // kSplit
  std::shared_ptr<const Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kByteLevel: the regex (when use_regex) is held in `pattern`.
  bool add_prefix_space = false;
  // kMetaspace
  std::string replacement = "\xE2\x96\x81";  // U+2581
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;
  // kDigits
  bool individual_digits = false;
};

// Splits one section of text (text between added tokens) into the pieces the
// model encodes one by one. `section_index` is the section's position in
// the whole input (Metaspace's "first" scheme prepends only to section 0).
// Pieces view `section` or strings kept in `storage` (for stages that
// rewrite text), so both must outlive `pieces`.
void pre_tokenize(const std::vector<PreTokenizer>& pre_tokenizers, std::string_view section,
                  size_t section_index, std::vector<std::string_view>& pieces,
                  std::deque<std::string>& storage);

struct Decoder {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kFuse;
  std::string pattern;  // kReplace: literal to replace; kStrip/kMetaspace: the character
  std::string content;  // kReplace: replacement
  size_t start = 0;     // kStrip: characters to strip at the start of the text
  size_t stop = 0;      // kStrip: characters to strip at the end of the text
  bool strip_first_space = true;  // kMetaspace: prepend_scheme != never
};

using DecodeState = TokenDecodeState;

// Decodes one token's vocabulary text through `decoders`, appending raw bytes
// (not yet checked for UTF-8) to `out`. Added tokens (`is_added`) keep their
// text as is through ByteLevel and ByteFallback, as the reference does.
// Returns true when the token was a byte-fallback token "<0xXX>".
bool decode_token(const std::vector<Decoder>& decoders, const ByteLevelAlphabet& alphabet,
                  std::string_view token_text, bool is_added, DecodeState& state,
                  std::string& out);

// Applies the end-of-text rules (Strip's `stop`) to a whole decoded text.
void finish_decode(const std::vector<Decoder>& decoders, std::string& text);

// The GPT-2 pre-tokenizer pattern (ByteLevel with use_regex = true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace tandem::tok
