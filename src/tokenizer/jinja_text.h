// UTF-8 text helpers for the chat template interpreter: code point access
// (string length, indexing and slicing count code points, not bytes), the
// whitespace set the reference renderer strips, and case mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tandem::jinja {

// Splits UTF-8 text into its characters (each a UTF-8 string). A byte that
// is not valid UTF-8 becomes a character of its own, so nothing is lost.
std::vector<std::string> utf8_chars(const std::string& s);
// Number of characters as utf8_chars counts them.
size_t utf8_length(const std::string& s);

// Byte length of the whitespace character at s[i], or 0 if it is not one.
// The set is JavaScript's \s (ASCII whitespace, NBSP, U+2000..U+200A, ...).
size_t whitespace_length(const std::string& s, size_t i);
// Byte length of the whitespace character that ends at s[end), or 0.
size_t whitespace_length_before(const std::string& s, size_t end);
std::string trim_whitespace(const std::string& s, bool left, bool right);
// Python str.strip(chars): strips any character contained in `chars`.
std::string trim_chars(const std::string& s, const std::string& chars, bool left, bool right);

// Case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic.
std::string to_upper(const std::string& s);
std::string to_lower(const std::string& s);
// Python str.title(): uppercase the first letter of each run of letters,
// lowercase the rest.
std::string to_title(const std::string& s);
// Python str.capitalize(): first character upper, the rest lower.
std::string capitalize(const std::string& s);


}  // namespace tandem::jinja
