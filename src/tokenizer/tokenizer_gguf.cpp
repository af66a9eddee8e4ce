#include "tokenizer/tokenizer_gguf.h"

#include <algorithm>
#include <map>

#include "common/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace tandem::tok {

namespace {

// Pre-tokenizer regexes of the byte-level models Tandem knows, by GGUF name.
struct PreTokenizerRecipe {
  const char* name;
  const char* regex;
  bool nfc;            // the tokenizer.json declares an NFC normalizer
  bool ignore_merges;  // the tokenizer.json declares ignore_merges
};

constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr PreTokenizerRecipe kRecipes[] = {
    {"qwen2", kQwen2Regex, true, false},
    {"llama-bpe", kLlama3Regex, false, true},
    {"llama3", kLlama3Regex, false, true},
    {"gpt2", kGpt2Pattern.data(), false, false},
    {"default", kGpt2Pattern.data(), false, false},
};

const PreTokenizerRecipe* find_recipe(std::string_view name) {
  for (const auto& r : kRecipes)
    if (name == r.name) return &r;
  return nullptr;
}

Normalizer normalizer_of(Normalizer::Kind kind) {
  Normalizer n;
  n.kind = kind;
  return n;
}

Decoder decoder_of(Decoder::Kind kind) {
  Decoder d;
  d.kind = kind;
  return d;
}

// The pipeline a GGUF byte-level tokenizer runs for `recipe`.
void byte_level_pipeline(const PreTokenizerRecipe& recipe, TokenizerSpec& spec) {
  if (recipe.nfc) spec.normalizers.push_back(normalizer_of(Normalizer::Kind::kNfc));
  PreTokenizer split;
  split.kind = PreTokenizer::Kind::kSplit;
  split.pattern = std::make_shared<Regex>(recipe.regex, false);
  split.behavior = SplitBehavior::kIsolated;
  spec.pre_tokenizers.push_back(split);
  PreTokenizer bytes;
  bytes.kind = PreTokenizer::Kind::kByteLevel;
  bytes.add_prefix_space = false;
  spec.pre_tokenizers.push_back(bytes);
  spec.decoders.push_back(decoder_of(Decoder::Kind::kByteLevel));
  spec.ignore_merges = recipe.ignore_merges;
}

// The pipeline of a GGUF "llama" (SentencePiece BPE) tokenizer.
void sentencepiece_pipeline(TokenizerSpec& spec) {
  const std::string space_mark = "\xE2\x96\x81";
  Normalizer prepend = normalizer_of(Normalizer::Kind::kPrepend);
  prepend.text = space_mark;
  Normalizer replace = normalizer_of(Normalizer::Kind::kReplace);
  replace.pattern = std::make_shared<Regex>(" ", true);
  replace.text = space_mark;
  spec.normalizers = {prepend, replace};
  Decoder to_space = decoder_of(Decoder::Kind::kReplace);
  to_space.pattern = space_mark;
  to_space.content = " ";
  Decoder strip = decoder_of(Decoder::Kind::kStrip);
  strip.pattern = " ";
  strip.start = 1;
  spec.decoders = {to_space, decoder_of(Decoder::Kind::kByteFallback), decoder_of(Decoder::Kind::kFuse), strip};
  spec.byte_fallback = true;
  spec.fuse_unk = true;
}

bool same_normalizers(const std::vector<Normalizer>& a, const std::vector<Normalizer>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].kind != b[i].kind || a[i].text != b[i].text || a[i].strip_left != b[i].strip_left ||
        a[i].strip_right != b[i].strip_right)
      return false;
    if ((a[i].pattern == nullptr) != (b[i].pattern == nullptr)) return false;
    if (a[i].pattern && a[i].pattern->pattern() != b[i].pattern->pattern()) return false;
  }
  return true;
}

bool same_pre_tokenizers(const std::vector<PreTokenizer>& a, const std::vector<PreTokenizer>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].kind != b[i].kind || a[i].behavior != b[i].behavior || a[i].invert != b[i].invert ||
        a[i].add_prefix_space != b[i].add_prefix_space || a[i].replacement != b[i].replacement ||
        a[i].prepend_scheme != b[i].prepend_scheme || a[i].split != b[i].split ||
        a[i].individual_digits != b[i].individual_digits)
      return false;
    if ((a[i].pattern == nullptr) != (b[i].pattern == nullptr)) return false;
    if (a[i].pattern && a[i].pattern->pattern() != b[i].pattern->pattern()) return false;
  }
  return true;
}

bool same_decoders(const std::vector<Decoder>& a, const std::vector<Decoder>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].kind != b[i].kind || a[i].pattern != b[i].pattern || a[i].content != b[i].content ||
        a[i].start != b[i].start || a[i].stop != b[i].stop ||
        a[i].strip_first_space != b[i].strip_first_space)
      return false;
  }
  return true;
}

std::vector<std::string> string_array(const gguf::GgufFile& file, const char* key) {
  const gguf::Value& v = file.get(key);
  const auto& arr = v.as_array();
  std::vector<std::string> out;
  out.reserve(arr.items.size());
  for (const auto& item : arr.items) out.push_back(item.as_string());
  return out;
}

std::optional<int32_t> optional_id(const gguf::GgufFile& file, const char* key) {
  const auto v = file.get_int_opt(key);
  if (!v) return std::nullopt;
  // llama.cpp tools write -1 (as u32 0xFFFFFFFF) for "none".
  if (*v < 0 || *v >= (int64_t{1} << 31) - 1 || *v == 0xFFFFFFFF) return std::nullopt;
  return static_cast<int32_t>(*v);
}

// Merges for a SentencePiece vocabulary that has scores but no merge list:
// every split of a token into two vocabulary tokens is a merge, ranked by the
// token's score (higher first).
std::vector<std::pair<std::string, std::string>> merges_from_scores(const std::vector<std::string>& tokens,
                                                                    const std::vector<float>& scores,
                                                                    const std::vector<int32_t>& types) {
  std::map<std::string, size_t, std::less<>> index;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (types.empty() || types[i] == static_cast<int32_t>(GgufTokenType::kNormal)) index.emplace(tokens[i], i);
  struct Candidate {
    float score;
    size_t id;
    std::string a, b;
  };
  std::vector<Candidate> candidates;
  for (const auto& [text, id] : index) {
    for (size_t cut = 1; cut < text.size(); ++cut) {
      if ((static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) continue;  // inside a character
      const std::string_view a(text.data(), cut), b(text.data() + cut, text.size() - cut);
      if (index.count(a) && index.count(b)) candidates.push_back({scores[id], id, std::string(a), std::string(b)});
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& x, const Candidate& y) {
    return x.score != y.score ? x.score > y.score : x.id < y.id;
  });
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(candidates.size());
  for (auto& c : candidates) merges.emplace_back(std::move(c.a), std::move(c.b));
  return merges;
}

}  // namespace

TokenizerSpec spec_from_gguf(const gguf::GgufFile& file) {
  TokenizerSpec spec;
  spec.source = file.path();
  const std::string model = file.get_string("tokenizer.ggml.model");
  spec.tokens = string_array(file, "tokenizer.ggml.tokens");
  std::vector<int32_t> types;
  if (const gguf::Value* v = file.find("tokenizer.ggml.token_type")) {
    for (const auto& item : v->as_array().items) types.push_back(static_cast<int32_t>(item.as_int()));
    check(types.size() == spec.tokens.size(), file.path() + ": tokenizer.ggml.token_type has " +
                                                  std::to_string(types.size()) + " entries for " +
                                                  std::to_string(spec.tokens.size()) + " tokens");
  }
  std::vector<float> scores;
  if (const gguf::Value* v = file.find("tokenizer.ggml.scores")) {
    for (const auto& item : v->as_array().items) scores.push_back(static_cast<float>(item.as_float()));
    check(scores.size() == spec.tokens.size(), file.path() + ": tokenizer.ggml.scores has " +
                                                   std::to_string(scores.size()) + " entries for " +
                                                   std::to_string(spec.tokens.size()) + " tokens");
  }
  if (file.find("tokenizer.ggml.merges") != nullptr) {
    for (const std::string& m : string_array(file, "tokenizer.ggml.merges")) {
      const size_t space = m.find(' ', 1);
      check(space != std::string::npos, file.path() + ": tokenizer.ggml.merges entry '" + m + "' is not two tokens");
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
  }

  if (model == "gpt2") {
    spec.kind = ModelKind::kByteLevelBpe;
    const std::string pre = file.get_string_opt("tokenizer.ggml.pre").value_or("default");
    const PreTokenizerRecipe* recipe = find_recipe(pre);
    check(recipe != nullptr, file.path() + ": tokenizer.ggml.pre '" + pre +
                                 "' is not a pre-tokenizer Tandem knows (known: qwen2, llama-bpe, llama3, gpt2, default)");
    byte_level_pipeline(*recipe, spec);
  } else if (model == "llama") {
    spec.kind = ModelKind::kSentencePieceBpe;
    sentencepiece_pipeline(spec);
    if (spec.merges.empty()) {
      check(!scores.empty(), file.path() + ": a 'llama' tokenizer needs tokenizer.ggml.merges or tokenizer.ggml.scores");
      spec.merges = merges_from_scores(spec.tokens, scores, types);
    }
  } else {
    throw Error(file.path() + ": tokenizer.ggml.model '" + model +
                "' is not supported (Tandem reads 'gpt2' byte-level BPE and 'llama' SentencePiece BPE)");
  }

  // Control and unknown tokens are special added tokens; user-defined ones
  // are added tokens that are not special.
  for (size_t id = 0; id < types.size(); ++id) {
    const auto type = static_cast<GgufTokenType>(types[id]);
    if (type != GgufTokenType::kControl && type != GgufTokenType::kUnknown && type != GgufTokenType::kUserDefined)
      continue;
    AddedToken t;
    t.id = static_cast<int32_t>(id);
    t.content = spec.tokens[id];
    t.special = type != GgufTokenType::kUserDefined;
    spec.added_tokens.push_back(std::move(t));
  }
  spec.bos_id = optional_id(file, "tokenizer.ggml.bos_token_id");
  spec.eos_id = optional_id(file, "tokenizer.ggml.eos_token_id");
  spec.unk_id = optional_id(file, "tokenizer.ggml.unknown_token_id");
  spec.pad_id = optional_id(file, "tokenizer.ggml.padding_token_id");
  // llama.cpp's defaults: SentencePiece models add BOS, byte-level ones do not.
  const bool add_bos = file.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(model == "llama");
  const bool add_eos = file.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos) {
    check(spec.bos_id.has_value(), file.path() + ": tokenizer.ggml.add_bos_token is set but there is no bos_token_id");
    spec.prefix_ids.push_back(*spec.bos_id);
  }
  if (add_eos) {
    check(spec.eos_id.has_value(), file.path() + ": tokenizer.ggml.add_eos_token is set but there is no eos_token_id");
    spec.suffix_ids.push_back(*spec.eos_id);
  }
  return spec;
}

void write_spec_to_gguf(const TokenizerSpec& spec, gguf::GgufWriter& writer) {
  // Check first that GGUF can describe this pipeline.
  TokenizerSpec expected;
  std::string model, pre;
  if (spec.kind == ModelKind::kByteLevelBpe) {
    model = "gpt2";
    const PreTokenizerRecipe* match = nullptr;
    for (const auto& recipe : kRecipes) {
      TokenizerSpec candidate;
      byte_level_pipeline(recipe, candidate);
      if (same_normalizers(spec.normalizers, candidate.normalizers) &&
          same_pre_tokenizers(spec.pre_tokenizers, candidate.pre_tokenizers) &&
          same_decoders(spec.decoders, candidate.decoders) && spec.ignore_merges == candidate.ignore_merges) {
        match = &recipe;
        break;
      }
    }
    check(match != nullptr, spec.source +
                                ": its normalizer / pre-tokenizer / decoder combination has no tokenizer.ggml.pre "
                                "name Tandem knows (qwen2, llama-bpe, gpt2), so it cannot be written to GGUF");
    pre = match->name;
  } else {
    model = "llama";
    sentencepiece_pipeline(expected);
    check(same_normalizers(spec.normalizers, expected.normalizers) && spec.pre_tokenizers.empty() &&
              same_decoders(spec.decoders, expected.decoders) && spec.byte_fallback && !spec.ignore_merges,
          spec.source + ": this SentencePiece pipeline differs from GGUF's 'llama' tokenizer, so it cannot be written to GGUF");
  }
  const bool add_bos = !spec.prefix_ids.empty();
  const bool add_eos = !spec.suffix_ids.empty();
  check(!add_bos || (spec.prefix_ids.size() == 1 && spec.bos_id && spec.prefix_ids[0] == *spec.bos_id),
        spec.source + ": the post-processor adds tokens other than BOS before the text; GGUF cannot express that");
  check(!add_eos || (spec.suffix_ids.size() == 1 && spec.eos_id && spec.suffix_ids[0] == *spec.eos_id),
        spec.source + ": the post-processor adds tokens other than EOS after the text; GGUF cannot express that");

  // Token types and scores.
  std::vector<int32_t> types(spec.tokens.size(), static_cast<int32_t>(GgufTokenType::kNormal));
  for (size_t id = 0; id < spec.tokens.size(); ++id) {
    const std::string& t = spec.tokens[id];
    if (spec.kind == ModelKind::kSentencePieceBpe && t.size() == 6 && t.starts_with("<0x") && t[5] == '>')
      types[id] = static_cast<int32_t>(GgufTokenType::kByte);
  }
  for (const AddedToken& t : spec.added_tokens)
    types[t.id] = static_cast<int32_t>(t.special ? GgufTokenType::kControl : GgufTokenType::kUserDefined);
  if (spec.unk_id) types[*spec.unk_id] = static_cast<int32_t>(GgufTokenType::kUnknown);

  std::vector<std::string> merges;
  merges.reserve(spec.merges.size());
  for (const auto& [a, b] : spec.merges) merges.push_back(a + " " + b);

  writer.set("tokenizer.ggml.model", gguf::Value::string(model));
  if (!pre.empty()) writer.set("tokenizer.ggml.pre", gguf::Value::string(pre));
  writer.set("tokenizer.ggml.tokens", gguf::Value::string_array(spec.tokens));
  writer.set("tokenizer.ggml.token_type", gguf::Value::i32_array(types));
  writer.set("tokenizer.ggml.merges", gguf::Value::string_array(merges));
  if (spec.kind == ModelKind::kSentencePieceBpe) {
    // A score per token: minus the rank of the merge that makes it (0 for
    // tokens no merge makes), so that merge order survives without merges.
    std::map<std::string, size_t, std::less<>> rank_of;
    for (size_t r = 0; r < spec.merges.size(); ++r)
      rank_of.try_emplace(spec.merges[r].first + spec.merges[r].second, r);
    std::vector<float> scores(spec.tokens.size(), 0.0f);
    for (size_t id = 0; id < spec.tokens.size(); ++id)
      if (auto it = rank_of.find(spec.tokens[id]); it != rank_of.end()) scores[id] = -static_cast<float>(it->second + 1);
    writer.set("tokenizer.ggml.scores", gguf::Value::f32_array(scores));
  }
  auto set_id = [&](const char* key, const std::optional<int32_t>& id) {
    if (id) writer.set(key, gguf::Value::u32(static_cast<uint32_t>(*id)));
  };
  set_id("tokenizer.ggml.bos_token_id", spec.bos_id);
  set_id("tokenizer.ggml.eos_token_id", spec.eos_id);
  set_id("tokenizer.ggml.unknown_token_id", spec.unk_id);
  set_id("tokenizer.ggml.padding_token_id", spec.pad_id);
  writer.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(add_bos));
  writer.set("tokenizer.ggml.add_eos_token", gguf::Value::boolean(add_eos));
}

}  // namespace tandem::tok

namespace tandem {

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::GgufFile& file) {
  return std::make_unique<tok::BpeTokenizer>(tok::spec_from_gguf(file));
}

void tok::BpeTokenizer::write_gguf_metadata(gguf::GgufWriter& writer) const { write_spec_to_gguf(spec_, writer); }

}  // namespace tandem
