#include "tokenizer/jinja_text.h"

#include "tokenizer/utf8.h"

namespace tandem::jinja {
namespace {

// Decodes the code point at s[i]. An invalid sequence yields the single byte
// (as a code point >= 0x110000 so that it never matches a real character).
uint32_t decode(const std::string& s, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) {
    return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
  };
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 >= 0xC2 && b0 < 0xE0 && cont(1)) {
    *len = 2;
    return ((b0 & 0x1Fu) << 6) | byte(1);
  }
  if (b0 >= 0xE0 && b0 < 0xF0 && cont(1) && cont(2)) {
    uint32_t cp = ((b0 & 0x0Fu) << 12) | (byte(1) << 6) | byte(2);
    if (cp >= 0x800) {
      *len = 3;
      return cp;
    }
  }
  if (b0 >= 0xF0 && b0 < 0xF5 && cont(1) && cont(2) && cont(3)) {
    uint32_t cp = ((b0 & 0x07u) << 18) | (byte(1) << 12) | (byte(2) << 6) | byte(3);
    if (cp >= 0x10000 && cp < 0x110000) {
      *len = 4;
      return cp;
    }
  }
  *len = 1;
  return 0x110000u + b0;
}

bool is_space_cp(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
    case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F:
    case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

uint32_t upper_cp(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
    bool odd_pairs = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    if (odd_pairs) return (c % 2 == 0) ? c - 1 : c;
    return (c % 2 == 1) ? c - 1 : c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

uint32_t lower_cp(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
    bool odd_pairs = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    if (odd_pairs) return (c % 2 == 1) ? c + 1 : c;
    return (c % 2 == 0) ? c + 1 : c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

bool is_letter_cp(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return upper_cp(c) != c || lower_cp(c) != c || (c >= 0x4E00 && c <= 0x9FFF) || c == 0xDF;
}

template <typename F>
std::string map_cps(const std::string& s, F f) {
  std::string out;
  out.reserve(s.size());
  size_t index = 0;
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    uint32_t cp = decode(s, i, &len);
    if (cp >= 0x110000) {
      out.push_back(s[i]);
    } else {
      tok::append_utf8(out, static_cast<char32_t>(f(cp, index)));
    }
    i += len;
    ++index;
  }
  return out;
}

}  // namespace

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    decode(s, i, &len);
    out.emplace_back(s.substr(i, len));
    i += len;
  }
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) {
    size_t len = 1;
    decode(s, i, &len);
    i += len;
  }
  return n;
}

size_t whitespace_length(const std::string& s, size_t i) {
  if (i >= s.size()) return 0;
  size_t len = 1;
  uint32_t cp = decode(s, i, &len);
  return is_space_cp(cp) ? len : 0;
}

size_t whitespace_length_before(const std::string& s, size_t end) {
  if (end == 0) return 0;
  // Walk back over continuation bytes to the start of the last character.
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t len = 1;
  uint32_t cp = decode(s, start, &len);
  if (start + len != end) return 0;
  return is_space_cp(cp) ? len : 0;
}

std::string trim_whitespace(const std::string& s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (size_t n = whitespace_length(s, b)) b += n;
  }
  if (right) {
    while (e > b) {
      size_t n = whitespace_length_before(s, e);
      if (n == 0) break;
      e -= n;
    }
  }
  return s.substr(b, e - b);
}

std::string trim_chars(const std::string& s, const std::string& chars, bool left, bool right) {
  std::vector<std::string> set = utf8_chars(chars);
  std::vector<std::string> cs = utf8_chars(s);
  auto in_set = [&](const std::string& c) {
    for (const auto& x : set)
      if (x == c) return true;
    return false;
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && in_set(cs[b])) ++b;
  if (right)
    while (e > b && in_set(cs[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cs[i];
  return out;
}

std::string to_upper(const std::string& s) {
  return map_cps(s, [](uint32_t c, size_t) { return upper_cp(c); });
}
std::string to_lower(const std::string& s) {
  return map_cps(s, [](uint32_t c, size_t) { return lower_cp(c); });
}
std::string capitalize(const std::string& s) {
  return map_cps(s, [](uint32_t c, size_t i) { return i == 0 ? upper_cp(c) : lower_cp(c); });
}
std::string to_title(const std::string& s) {
  bool prev_letter = false;
  return map_cps(s, [&](uint32_t c, size_t) {
    bool letter = is_letter_cp(c);
    uint32_t r = letter ? (prev_letter ? lower_cp(c) : upper_cp(c)) : c;
    prev_letter = letter;
    return r;
  });
}

}  // namespace tandem::jinja
