// The byte <-> printable-character alphabet of byte-level BPE vocabularies:
// printable Latin-1 bytes stand for themselves, the other 68 bytes map to
// U+0100.. in byte order (so a space is "Ġ", U+0120, and "\n" is "Ċ").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::tok {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  // UTF-8 text of the character that stands for `byte`.
  const std::string& encode(uint8_t byte) const { return byte_to_text_[byte]; }
  // Byte a code point stands for, if it is in the alphabet.
  std::optional<uint8_t> decode(char32_t cp) const {
    if (cp >= cp_to_byte_.size() || cp_to_byte_[cp] < 0) return std::nullopt;
    return static_cast<uint8_t>(cp_to_byte_[cp]);
  }
  // Maps every character of `text` back to its byte; a character outside the
  // alphabet is kept as its own UTF-8 bytes.
  void decode_append(std::string_view text, std::string& out) const;

 private:
  std::array<std::string, 256> byte_to_text_;
  std::array<int16_t, 0x144> cp_to_byte_;  // highest mapped code point is U+0143
};

}  // namespace tandem::tok
