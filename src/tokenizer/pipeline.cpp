#include "tokenizer/pipeline.h"

#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8.h"

namespace tandem::tok {

namespace {

std::string replace_matches(const Regex& pattern, std::string_view text, std::string_view with) {
  const auto matches = pattern.find_all(text);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * with.size());
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    out.append(text.substr(last, b - last));
    out.append(with);
    last = e;
  }
  out.append(text.substr(last));
  return out;
}

std::string_view strip_whitespace(std::string_view s, bool left, bool right) {
  if (left) {
    size_t pos = 0;
    while (pos < s.size()) {
      size_t next = pos;
      if (!is_unicode_whitespace(next_code_point(s, next))) break;
      pos = next;
    }
    s.remove_prefix(pos);
  }
  if (right) {
    // Walk forward remembering where the trailing white space run starts.
    size_t pos = 0, run_start = 0;
    bool in_run = false;
    while (pos < s.size()) {
      const size_t at = pos;
      const bool ws = is_unicode_whitespace(next_code_point(s, pos));
      if (ws && !in_run) run_start = at;
      in_run = ws;
    }
    if (in_run) s = s.substr(0, run_start);
  }
  return s;
}

// Splits every piece in `pieces` by `matches` of a pattern, following `behavior`.
void split_piece(std::string_view piece, const std::vector<std::pair<size_t, size_t>>& matches,
                 SplitBehavior behavior, bool invert, std::vector<std::string_view>& out) {
  if (behavior == SplitBehavior::kIsolated) {
    // Matches and the gaps between them all become pieces.
    size_t last = 0;
    for (const auto& [b, e] : matches) {
      if (b > last) out.push_back(piece.substr(last, b - last));
      out.push_back(piece.substr(b, e - b));
      last = e;
    }
    if (last < piece.size()) out.push_back(piece.substr(last));
    return;
  }
  // Spans covering the whole piece, each flagged as a match or a gap.
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    if (b > last) spans.push_back({last, b, invert});
    spans.push_back({b, e, !invert});
    last = e;
  }
  if (last < piece.size()) spans.push_back({last, piece.size(), invert});

  auto emit = [&](size_t b, size_t e) {
    if (e > b) out.push_back(piece.substr(b, e - b));
  };
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& s : spans)
        if (!s.is_match) emit(s.begin, s.end);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& s : spans) emit(s.begin, s.end);
      break;
    case SplitBehavior::kContiguous: {
      size_t i = 0;
      while (i < spans.size()) {
        size_t j = i + 1;
        while (j < spans.size() && spans[j].is_match == spans[i].is_match) ++j;
        emit(spans[i].begin, spans[j - 1].end);
        i = j;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      // A match joins the piece before it.
      size_t begin = 0;
      for (const auto& s : spans) {
        if (s.is_match) {
          emit(begin, s.end);
          begin = s.end;
        }
      }
      emit(begin, piece.size());
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // A match starts a new piece that runs up to the next match.
      size_t begin = 0;
      for (const auto& s : spans) {
        if (s.is_match && s.begin > begin) {
          emit(begin, s.begin);
          begin = s.begin;
        }
      }
      emit(begin, piece.size());
      break;
    }
  }
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  size_t last = 0;
  for (size_t pos = text.find(from); pos != std::string_view::npos; pos = text.find(from, last)) {
    out.append(text.substr(last, pos - last));
    out.append(to);
    last = pos + from.size();
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace

std::string normalize(const std::vector<Normalizer>& normalizers, std::string_view text) {
  std::string current(text);
  for (const auto& n : normalizers) {
    switch (n.kind) {
      case Normalizer::Kind::kNfc:
        current = nfc_normalize(current);
        break;
      case Normalizer::Kind::kPrepend:
        if (!current.empty()) current.insert(0, n.text);
        break;
      case Normalizer::Kind::kReplace:
        current = replace_matches(*n.pattern, current, n.text);
        break;
      case Normalizer::Kind::kStrip:
        current = std::string(strip_whitespace(current, n.strip_left, n.strip_right));
        break;
    }
  }
  return current;
}

void pre_tokenize(const std::vector<PreTokenizer>& pre_tokenizers, std::string_view section,
                  size_t section_index, std::vector<std::string_view>& pieces,
                  std::deque<std::string>& storage) {
  pieces.clear();
  pieces.push_back(section);
  std::vector<std::string_view> next;
  for (const auto& pt : pre_tokenizers) {
    next.clear();
    for (std::string_view piece : pieces) {
      switch (pt.kind) {
        case PreTokenizer::Kind::kSplit:
          split_piece(piece, pt.pattern->find_all(piece), pt.behavior, pt.invert, next);
          break;
        case PreTokenizer::Kind::kByteLevel: {
          // The byte mapping itself happens in the model, which works on raw bytes.
          if (pt.add_prefix_space && !piece.empty() && piece[0] != ' ') {
            storage.push_back(" " + std::string(piece));
            piece = storage.back();
          }
          if (pt.pattern) {
            split_piece(piece, pt.pattern->find_all(piece), SplitBehavior::kIsolated, false, next);
          } else {
            next.push_back(piece);
          }
          break;
        }
        case PreTokenizer::Kind::kMetaspace: {
          std::string replaced = replace_all(piece, " ", pt.replacement);
          const bool prepend = pt.prepend_scheme == PrependScheme::kAlways ||
                               (pt.prepend_scheme == PrependScheme::kFirst && section_index == 0);
          if (prepend && !replaced.starts_with(pt.replacement)) replaced.insert(0, pt.replacement);
          storage.push_back(std::move(replaced));
          const std::string_view text = storage.back();
          if (!pt.split) {
            next.push_back(text);
            break;
          }
          std::vector<std::pair<size_t, size_t>> matches;
          for (size_t pos = text.find(pt.replacement); pos != std::string_view::npos;
               pos = text.find(pt.replacement, pos + pt.replacement.size()))
            matches.emplace_back(pos, pos + pt.replacement.size());
          split_piece(text, matches, SplitBehavior::kMergedWithNext, false, next);
          break;
        }
        case PreTokenizer::Kind::kDigits: {
          std::vector<std::pair<size_t, size_t>> matches;
          size_t i = 0;
          while (i < piece.size()) {
            if (piece[i] >= '0' && piece[i] <= '9') {
              size_t j = i + 1;
              if (!pt.individual_digits)
                while (j < piece.size() && piece[j] >= '0' && piece[j] <= '9') ++j;
              matches.emplace_back(i, j);
              i = j;
            } else {
              ++i;
            }
          }
          split_piece(piece, matches, SplitBehavior::kIsolated, false, next);
          break;
        }
      }
    }
    pieces.swap(next);
  }
}

bool decode_token(const std::vector<Decoder>& decoders, const ByteLevelAlphabet& alphabet,
                  std::string_view token_text, bool is_added, DecodeState& state,
                  std::string& out) {
  std::string text(token_text);
  bool is_byte = false;
  bool fused = false;
  for (const auto& d : decoders) {
    switch (d.kind) {
      case Decoder::Kind::kByteLevel:
        if (!is_added) {
          std::string bytes;
          alphabet.decode_append(text, bytes);
          text.swap(bytes);
        }
        break;
      case Decoder::Kind::kReplace:
        text = replace_all(text, d.pattern, d.content);
        break;
      case Decoder::Kind::kByteFallback:
        if (!is_added && text.size() == 6 && text.starts_with("<0x") && text[5] == '>') {
          auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
          };
          const int hi = hex(text[3]), lo = hex(text[4]);
          if (hi >= 0 && lo >= 0) {
            text.assign(1, static_cast<char>(hi * 16 + lo));
            is_byte = true;
          }
        }
        break;
      case Decoder::Kind::kFuse:
        fused = true;
        break;
      case Decoder::Kind::kStrip: {
        // After Fuse the whole text is one token: strip only at its start.
        // Without Fuse, every token is stripped on its own.
        size_t budget = fused ? (d.start - std::min(d.start, state.start_stripped)) : d.start;
        if (fused && state.text_started) budget = 0;
        size_t cut = 0;
        while (budget > 0 && text.compare(cut, d.pattern.size(), d.pattern) == 0 &&
               cut + d.pattern.size() <= text.size()) {
          cut += d.pattern.size();
          --budget;
          if (fused) ++state.start_stripped;
        }
        text.erase(0, cut);
        if (!fused && d.stop > 0) {
          for (size_t k = 0; k < d.stop && text.ends_with(d.pattern); ++k)
            text.resize(text.size() - d.pattern.size());
        }
        break;
      }
      case Decoder::Kind::kMetaspace:
        text = replace_all(text, d.pattern, " ");
        if (d.strip_first_space && state.tokens_seen == 0 && text.starts_with(' ')) text.erase(0, 1);
        break;
    }
  }
  ++state.tokens_seen;
  if (!text.empty()) state.text_started = true;
  out.append(text);
  return is_byte;
}

void finish_decode(const std::vector<Decoder>& decoders, std::string& text) {
  bool fused = false;
  for (const auto& d : decoders) {
    if (d.kind == Decoder::Kind::kFuse) fused = true;
    if (d.kind == Decoder::Kind::kStrip && fused) {
      for (size_t k = 0; k < d.stop && text.ends_with(d.pattern); ++k)
        text.resize(text.size() - d.pattern.size());
    }
  }
}

}  // namespace tandem::tok
