#include "tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tokenizer/utf8.h"

namespace tandem::tok {

namespace {

struct CombiningClass {
  char32_t cp;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  char32_t first;
  char32_t second;  // 0 when the mapping is a single code point
};
struct CodePointRange {
  char32_t first;
  char32_t last;
};
struct Composition {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "tokenizer/unicode_nfc_tables.inc"

// Hangul syllables compose and decompose by arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// A stable starter never changes under NFC and nothing before it can
// combine with it or anything after it.
bool is_stable_starter(char32_t cp) {
  if (cp < 0xC0) return true;
  const auto* end = std::end(kUnstableRanges);
  const auto* it = std::upper_bound(std::begin(kUnstableRanges), end, cp,
                                    [](char32_t c, const CodePointRange& r) { return c < r.first; });
  return it == std::begin(kUnstableRanges) || cp > std::prev(it)->last;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = std::end(kCombiningClasses);
  const auto* it = std::lower_bound(std::begin(kCombiningClasses), end, cp,
                                    [](const CombiningClass& e, char32_t c) { return e.cp < c; });
  return (it != end && it->cp == cp) ? it->ccc : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    const auto* end = std::end(kDecompositions);
    const auto* it = std::lower_bound(std::begin(kDecompositions), end, cp,
                                      [](const Decomposition& e, char32_t c) { return e.cp < c; });
    if (it != end && it->cp == cp) {
      decompose(it->first, out);
      if (it->second != 0) decompose(it->second, out);
      return;
    }
  }
  out.push_back(cp);
}

// Composite of (first, second), or 0.
char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount)
    return first + (second - kTBase);
  const auto* end = std::end(kCompositions);
  const auto* it = std::lower_bound(std::begin(kCompositions), end, std::pair{first, second},
                                    [](const Composition& e, const std::pair<char32_t, char32_t>& k) {
                                      return e.first != k.first ? e.first < k.first
                                                                : e.second < k.second;
                                    });
  return (it != end && it->first == first && it->second == second) ? it->composite : 0;
}

// NFC of a run of code points (decompose, reorder, compose), appended as UTF-8.
void nfc_run(const std::vector<char32_t>& input, std::string& out) {
  std::vector<char32_t> cps;
  cps.reserve(input.size() + 8);
  for (char32_t cp : input) decompose(cp, cps);
  // Canonical ordering: stable sort of each run of non-starters by class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j, [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Canonical composition.
  std::vector<char32_t> result;
  result.reserve(cps.size());
  size_t starter = SIZE_MAX;  // index in `result` of the last starter
  int last_ccc = 0;           // class of the last character appended
  for (char32_t cp : cps) {
    const int ccc = combining_class(cp);
    if (starter != SIZE_MAX) {
      // cp may join the starter when nothing between them blocks it: either
      // they are adjacent, or the last character between has a lower,
      // non-zero class.
      const bool adjacent = result.size() == starter + 1;
      if (adjacent || (last_ccc != 0 && last_ccc < ccc)) {
        if (const char32_t c = compose_pair(result[starter], cp); c != 0) {
          result[starter] = c;
          continue;
        }
      }
    }
    if (ccc == 0) starter = result.size();
    last_ccc = ccc;
    result.push_back(cp);
  }
  for (char32_t cp : result) append_utf8(out, cp);
}

}  // namespace

std::string nfc_normalize(std::string_view text) {
  // Fast path: nothing at or above U+0300 means nothing can change.
  bool simple = true;
  for (char c : text) {
    if (static_cast<uint8_t>(c) >= 0xCC) {
      simple = false;
      break;
    }
  }
  if (simple) return std::string(text);

  // The text is cut into segments that each begin at a stable starter; a
  // segment made only of stable starters is copied as is, any other goes
  // through decomposition and recomposition.
  std::string out;
  out.reserve(text.size());
  std::vector<char32_t> run;
  size_t segment_start = 0;
  bool segment_unstable = false;
  auto flush = [&](size_t end) {
    if (segment_unstable) {
      nfc_run(run, out);
    } else {
      out.append(text.substr(segment_start, end - segment_start));
    }
    run.clear();
    segment_start = end;
    segment_unstable = false;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t at = pos;
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      flush(at);  // ASCII is a stable starter
      run.push_back(static_cast<uint8_t>(text[pos]));
      ++pos;
      continue;
    }
    if (utf8_sequence_length(text, pos) == 0) {
      // Ill-formed byte: a boundary, copied through.
      flush(at);
      out.push_back(text[pos++]);
      segment_start = pos;
      continue;
    }
    const char32_t cp = next_code_point(text, pos);
    if (is_stable_starter(cp)) {
      flush(at);
    } else {
      segment_unstable = true;
    }
    run.push_back(cp);
  }
  flush(text.size());
  return out;
}

}  // namespace tandem::tok
