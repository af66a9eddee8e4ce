#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace tandem::tok {

BpeTokenizer::BpeTokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {
  const size_t n = spec_.tokens.size();
  check(n > 0, spec_.source + ": the vocabulary is empty");
  token_to_id_.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    if (!spec_.tokens[id].empty()) token_to_id_.try_emplace(spec_.tokens[id], static_cast<int32_t>(id));
  }
  token_flags_.assign(n, 0);
  std::vector<const AddedToken*> raw, normalized;
  std::vector<std::string> raw_texts, normalized_texts;
  for (const AddedToken& t : spec_.added_tokens) {
    check(t.id >= 0 && static_cast<size_t>(t.id) < n,
          spec_.source + ": added token '" + t.content + "' has id " + std::to_string(t.id) +
              " outside the vocabulary of " + std::to_string(n));
    token_flags_[t.id] |= kAdded | (t.special ? kSpecial : 0);
    // The added token's own text maps to its id even if the model vocab differs.
    token_to_id_.insert_or_assign(t.content, t.id);
    if (t.normalized && !spec_.normalizers.empty()) {
      normalized.push_back(&t);
      normalized_texts.push_back(normalize(spec_.normalizers, t.content));
    } else {
      raw.push_back(&t);
      raw_texts.push_back(t.content);
    }
  }
  auto check_id = [&](const std::optional<int32_t>& id, const char* what) {
    check(!id || (*id >= 0 && static_cast<size_t>(*id) < n),
          spec_.source + ": " + what + " id " + (id ? std::to_string(*id) : "") +
              " is outside the vocabulary of " + std::to_string(n));
  };
  check_id(spec_.unk_id, "unknown-token");
  check_id(spec_.bos_id, "bos");
  check_id(spec_.eos_id, "eos");
  check_id(spec_.pad_id, "padding");
  for (int32_t id : spec_.prefix_ids) check_id(id, "post-processor");
  for (int32_t id : spec_.suffix_ids) check_id(id, "post-processor");

  raw_matcher_ = std::make_unique<AddedTokenMatcher>(raw, raw_texts);
  normalized_matcher_ = std::make_unique<AddedTokenMatcher>(normalized, normalized_texts);

  BpeOptions options;
  options.byte_level = spec_.kind == ModelKind::kByteLevelBpe;
  options.byte_fallback = spec_.byte_fallback;
  options.fuse_unk = spec_.fuse_unk;
  options.ignore_merges = spec_.ignore_merges;
  options.unk_id = spec_.unk_id;
  // The model sees only the model vocabulary: added tokens are matched
  // before it runs. Build its map from the vocabulary texts.
  try {
    model_ = std::make_unique<BpeModel>(token_to_id_, spec_.merges, options);
  } catch (const Error& e) {
    throw Error(spec_.source + ": " + e.what());
  }
}

void BpeTokenizer::encode_plain(std::string_view text, size_t section_index,
                                std::vector<int32_t>& out) const {
  // Without normalizers the text is used in place.
  std::string normalized_storage;
  std::string_view normalized = text;
  if (!spec_.normalizers.empty()) {
    normalized_storage = normalize(spec_.normalizers, text);
    normalized = normalized_storage;
  }
  if (normalized.empty()) return;
  std::vector<AddedTokenMatcher::Segment> segments;
  if (normalized_matcher_->empty()) {
    segments.push_back({normalized, -1});
  } else {
    normalized_matcher_->split(normalized, segments);
  }
  std::vector<std::string_view> pieces;
  std::deque<std::string> storage;
  for (const auto& seg : segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    pre_tokenize(spec_.pre_tokenizers, seg.text, section_index, pieces, storage);
    for (std::string_view piece : pieces) model_->encode_piece(piece, out);
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special) ids.insert(ids.end(), spec_.prefix_ids.begin(), spec_.prefix_ids.end());
  std::vector<AddedTokenMatcher::Segment> sections;
  raw_matcher_->split(text, sections);
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].id >= 0) {
      ids.push_back(sections[i].id);
    } else {
      encode_plain(sections[i].text, i, ids);
    }
  }
  if (add_special) ids.insert(ids.end(), spec_.suffix_ids.begin(), spec_.suffix_ids.end());
  return ids;
}

void BpeTokenizer::decode_append(int32_t id, bool skip_special, TokenDecodeState& state,
                                 std::string& bytes) const {
  const std::string& text = token_text(id);
  if (skip_special && is_special(id)) return;
  decode_token(spec_.decoders, alphabet_, text, (token_flags_[id] & kAdded) != 0, state, bytes);
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  // Byte-fallback tokens are collected in runs: a run that is not valid
  // UTF-8 becomes one U+FFFD per byte. Byte-level text is repaired in runs
  // between added tokens. Both follow the reference decoders.
  std::string result;
  std::string raw;         // decoded text not yet checked for UTF-8
  std::string byte_run;    // consecutive byte-fallback tokens
  std::string piece;
  TokenDecodeState state;
  const bool byte_level = spec_.kind == ModelKind::kByteLevelBpe;
  auto flush_byte_run = [&] {
    if (byte_run.empty()) return;
    if (is_valid_utf8(byte_run)) {
      raw += byte_run;
    } else {
      for (size_t k = 0; k < byte_run.size(); ++k) raw += kReplacementUtf8;
    }
    byte_run.clear();
  };
  for (int32_t id : ids) {
    const std::string& text = token_text(id);  // throws on a bad id
    if (skip_special && is_special(id)) continue;
    const bool added = (token_flags_[id] & kAdded) != 0;
    piece.clear();
    if (decode_token(spec_.decoders, alphabet_, text, added, state, piece)) {
      byte_run += piece;
      continue;
    }
    flush_byte_run();
    if (added && byte_level) {
      result += repair_utf8(raw);
      raw.clear();
      result += piece;
    } else {
      raw += piece;
    }
  }
  flush_byte_run();
  result += repair_utf8(raw);
  finish_decode(spec_.decoders, result);
  return result;
}

const std::string& BpeTokenizer::token_text(int32_t id) const {
  check(id >= 0 && static_cast<size_t>(id) < spec_.tokens.size(),
        "token id " + std::to_string(id) + " is outside the vocabulary of " +
            std::to_string(spec_.tokens.size()));
  return spec_.tokens[id];
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view text) const {
  return find_id(token_to_id_, text);
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < token_flags_.size() && (token_flags_[id] & kSpecial) != 0;
}

std::vector<int32_t> BpeTokenizer::stop_ids() const {
  std::vector<int32_t> ids;
  if (spec_.eos_id) ids.push_back(*spec_.eos_id);
  // End-of-turn and end-of-text markers of the model families Tandem runs.
  static constexpr std::string_view kStopTexts[] = {
      "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
      "</s>",       "<|end|>",       "<end_of_turn>"};
  for (std::string_view t : kStopTexts) {
    if (auto id = token_id(t); id && is_special(*id) &&
                                std::find(ids.begin(), ids.end(), *id) == ids.end())
      ids.push_back(*id);
  }
  return ids;
}

std::string BpeTokenizer::kind_name() const {
  return spec_.kind == ModelKind::kByteLevelBpe ? "byte-level BPE" : "SentencePiece BPE";
}

std::string BpeTokenizer::bos_text() const { return spec_.bos_id ? spec_.tokens[*spec_.bos_id] : ""; }
std::string BpeTokenizer::eos_text() const { return spec_.eos_id ? spec_.tokens[*spec_.eos_id] : ""; }

}  // namespace tandem::tok
