#include "tokenizer/utf8.h"

namespace tandem::tok {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Valid range of the second byte for a given lead byte (Unicode Table 3-7);
// later continuation bytes are always 0x80..0xBF.
struct LeadInfo {
  size_t length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Length of the maximal prefix of a well-formed sequence at s[pos]
// (at least 1 for a valid lead byte, 0 for a byte that cannot start one).
size_t valid_prefix_length(std::string_view s, size_t pos, size_t* full_length) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  const LeadInfo info = lead_info(b0);
  *full_length = info.length;
  if (info.length <= 1) return info.length;
  size_t n = 1;
  if (pos + 1 >= s.size()) return n;
  const auto b1 = static_cast<uint8_t>(s[pos + 1]);
  if (b1 < info.second_lo || b1 > info.second_hi) return n;
  ++n;
  while (n < info.length && pos + n < s.size()) {
    const auto b = static_cast<uint8_t>(s[pos + n]);
    if (b < 0x80 || b > 0xBF) break;
    ++n;
  }
  return n;
}

}  // namespace

size_t utf8_sequence_length(std::string_view s, size_t pos) {
  size_t full = 0;
  const size_t n = valid_prefix_length(s, pos, &full);
  return (n == full && full > 0) ? full : 0;
}

char32_t next_code_point(std::string_view s, size_t& pos) {
  const size_t n = utf8_sequence_length(s, pos);
  if (n == 0) {
    ++pos;
    return kReplacementChar;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(s.data() + pos);
  pos += n;
  switch (n) {
    case 1: return p[0];
    case 2: return (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    case 3: return (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    default:
      return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) |
             (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
  }
}

bool is_valid_utf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = utf8_sequence_length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      out.push_back(s[pos++]);
      continue;
    }
    size_t full = 0;
    const size_t n = valid_prefix_length(s, pos, &full);
    if (n == full && full > 0) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      out.append(kReplacementUtf8);
      pos += (n == 0 ? 1 : n);
    }
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view s) {
  // A proper prefix is at most 3 bytes; look back for its lead byte.
  const size_t lookback = s.size() < 3 ? s.size() : 3;
  for (size_t back = 1; back <= lookback; ++back) {
    const size_t pos = s.size() - back;
    const auto b = static_cast<uint8_t>(s[pos]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking
    size_t full = 0;
    const size_t n = valid_prefix_length(s, pos, &full);
    return (n == back && full > back) ? back : 0;
  }
  return 0;
}

bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace tandem::tok
