#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace tandem::tok {

ByteLevelAlphabet::ByteLevelAlphabet() {
  cp_to_byte_.fill(-1);
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  char32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : next_extra++;
    byte_to_text_[b].clear();
    append_utf8(byte_to_text_[b], cp);
    cp_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelAlphabet::decode_append(std::string_view text, std::string& out) const {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = next_code_point(text, pos);
    if (auto b = decode(cp); b && utf8_sequence_length(text, start) != 0) {
      out.push_back(static_cast<char>(*b));
    } else {
      out.append(text.substr(start, pos - start));
    }
  }
}

}  // namespace tandem::tok
