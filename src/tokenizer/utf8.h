// UTF-8 helpers shared by the tokenizer: decoding code points, validity, and
// the lossy repair that the reference applies when ids decode to bad bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::tok {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Appends the UTF-8 encoding of `cp` (must be a scalar value <= 0x10FFFF).
void append_utf8(std::string& out, char32_t cp);

// Length of the well-formed UTF-8 sequence starting at s[pos], or 0 when the
// bytes there are not a complete, well-formed sequence (RFC 3629 rules: no
// overlongs, no surrogates, nothing above U+10FFFF).
size_t utf8_sequence_length(std::string_view s, size_t pos);

// Decodes the sequence at s[pos] and advances pos. An ill-formed byte yields
// U+FFFD and advances by one byte.
char32_t next_code_point(std::string_view s, size_t& pos);

bool is_valid_utf8(std::string_view s);

// Replaces every maximal ill-formed subpart with U+FFFD (the "substitution of
// maximal subparts" practice, which is also what the reference decoders do).
std::string repair_utf8(std::string_view s);

// Number of bytes at the end of `s` that form a proper prefix of a
// well-formed sequence (0..3): bytes that may still become a character.
size_t incomplete_utf8_tail(std::string_view s);

// White space as Unicode defines it (White_Space property).
bool is_unicode_whitespace(char32_t cp);

}  // namespace tandem::tok
