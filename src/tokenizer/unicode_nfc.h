// Unicode Normalization Form C, for tokenizers whose normalizer is "NFC".
// Tables are generated from the Unicode Character Database by
// gen_unicode_nfc_tables.py (committed next to its output).
#pragma once

#include <string>
#include <string_view>

namespace tandem::tok {

// NFC of `text`. Ill-formed UTF-8 bytes are passed through unchanged and act
// as boundaries (nothing composes across them).
std::string nfc_normalize(std::string_view text);

}  // namespace tandem::tok
