#include "tokenizer/tokenizer_json.h"

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace tandem::tok {

namespace {

using json = nlohmann::json;

// Context for messages: "<file>: <where>: <problem>".
struct Reader {
  std::string source;

  [[noreturn]] void fail(const std::string& where, const std::string& problem) const {
    throw Error(source + ": " + where + ": " + problem);
  }
  const json& field(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) fail(where, std::string("missing field '") + key + "'");
    return obj.at(key);
  }
  std::string type_of(const json& obj, const std::string& where) const {
    const json& t = field(obj, "type", where);
    if (!t.is_string()) fail(where, "field 'type' is not a string");
    return t.get<std::string>();
  }
  bool get_bool(const json& obj, const char* key, bool fallback) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
    if (!obj.at(key).is_boolean()) fail(key, "expected true or false");
    return obj.at(key).get<bool>();
  }
  std::string get_string(const json& obj, const char* key, const std::string& where) const {
    const json& v = field(obj, key, where);
    if (!v.is_string()) fail(where, std::string("field '") + key + "' is not a string");
    return v.get<std::string>();
  }
};

// {"String": "x"} or {"Regex": "x"} -> compiled pattern.
std::shared_ptr<const Regex> read_pattern(const Reader& r, const json& p, const std::string& where) {
  if (p.is_object() && p.contains("String") && p.at("String").is_string())
    return std::make_shared<Regex>(p.at("String").get<std::string>(), /*literal=*/true);
  if (p.is_object() && p.contains("Regex") && p.at("Regex").is_string())
    return std::make_shared<Regex>(p.at("Regex").get<std::string>(), /*literal=*/false);
  r.fail(where, "pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

void read_normalizer(const Reader& r, const json& n, std::vector<Normalizer>& out) {
  if (n.is_null()) return;
  const std::string type = r.type_of(n, "normalizer");
  if (type == "Sequence") {
    for (const json& child : r.field(n, "normalizers", "normalizer Sequence")) read_normalizer(r, child, out);
    return;
  }
  Normalizer norm;
  if (type == "NFC") {
    norm.kind = Normalizer::Kind::kNfc;
  } else if (type == "Prepend") {
    norm.kind = Normalizer::Kind::kPrepend;
    norm.text = r.get_string(n, "prepend", "normalizer Prepend");
  } else if (type == "Replace") {
    norm.kind = Normalizer::Kind::kReplace;
    norm.pattern = read_pattern(r, r.field(n, "pattern", "normalizer Replace"), "normalizer Replace");
    norm.text = r.get_string(n, "content", "normalizer Replace");
  } else if (type == "Strip") {
    norm.kind = Normalizer::Kind::kStrip;
    norm.strip_left = r.get_bool(n, "strip_left", true);
    norm.strip_right = r.get_bool(n, "strip_right", true);
  } else {
    r.fail("normalizer", "type '" + type + "' is not supported by Tandem");
  }
  out.push_back(std::move(norm));
}

PrependScheme read_prepend_scheme(const Reader& r, const json& obj, const std::string& where) {
  if (obj.contains("prepend_scheme") && obj.at("prepend_scheme").is_string()) {
    const std::string s = obj.at("prepend_scheme").get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    r.fail(where, "prepend_scheme '" + s + "' is not always, first or never");
  }
  // Older files: add_prefix_space (default true).
  return r.get_bool(obj, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

void read_pre_tokenizer(const Reader& r, const json& p, std::vector<PreTokenizer>& out) {
  if (p.is_null()) return;
  const std::string type = r.type_of(p, "pre_tokenizer");
  if (type == "Sequence") {
    for (const json& child : r.field(p, "pretokenizers", "pre_tokenizer Sequence"))
      read_pre_tokenizer(r, child, out);
    return;
  }
  PreTokenizer pt;
  if (type == "Split") {
    pt.kind = PreTokenizer::Kind::kSplit;
    pt.pattern = read_pattern(r, r.field(p, "pattern", "pre_tokenizer Split"), "pre_tokenizer Split");
    const std::string behavior = r.get_string(p, "behavior", "pre_tokenizer Split");
    static const std::map<std::string, SplitBehavior> kBehaviors = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    const auto it = kBehaviors.find(behavior);
    if (it == kBehaviors.end()) r.fail("pre_tokenizer Split", "behavior '" + behavior + "' is not supported");
    pt.behavior = it->second;
    pt.invert = r.get_bool(p, "invert", false);
  } else if (type == "ByteLevel") {
    pt.kind = PreTokenizer::Kind::kByteLevel;
    pt.add_prefix_space = r.get_bool(p, "add_prefix_space", true);
    if (r.get_bool(p, "use_regex", true)) pt.pattern = std::make_shared<Regex>(std::string(kGpt2Pattern), false);
  } else if (type == "Metaspace") {
    pt.kind = PreTokenizer::Kind::kMetaspace;
    if (p.contains("replacement")) pt.replacement = r.get_string(p, "replacement", "pre_tokenizer Metaspace");
    pt.prepend_scheme = read_prepend_scheme(r, p, "pre_tokenizer Metaspace");
    pt.split = r.get_bool(p, "split", true);
  } else if (type == "Digits") {
    pt.kind = PreTokenizer::Kind::kDigits;
    pt.individual_digits = r.get_bool(p, "individual_digits", false);
  } else {
    r.fail("pre_tokenizer", "type '" + type + "' is not supported by Tandem");
  }
  out.push_back(std::move(pt));
}

void read_decoder(const Reader& r, const json& d, std::vector<Decoder>& out) {
  if (d.is_null()) return;
  const std::string type = r.type_of(d, "decoder");
  if (type == "Sequence") {
    for (const json& child : r.field(d, "decoders", "decoder Sequence")) read_decoder(r, child, out);
    return;
  }
  Decoder dec;
  if (type == "ByteLevel") {
    dec.kind = Decoder::Kind::kByteLevel;
  } else if (type == "Replace") {
    dec.kind = Decoder::Kind::kReplace;
    const json& pattern = r.field(d, "pattern", "decoder Replace");
    if (!pattern.is_object() || !pattern.contains("String") || !pattern.at("String").is_string())
      r.fail("decoder Replace", "only {\"String\": ...} patterns are supported");
    dec.pattern = pattern.at("String").get<std::string>();
    dec.content = r.get_string(d, "content", "decoder Replace");
  } else if (type == "ByteFallback") {
    dec.kind = Decoder::Kind::kByteFallback;
  } else if (type == "Fuse") {
    dec.kind = Decoder::Kind::kFuse;
  } else if (type == "Strip") {
    dec.kind = Decoder::Kind::kStrip;
    dec.pattern = r.get_string(d, "content", "decoder Strip");
    const json& start = r.field(d, "start", "decoder Strip");
    const json& stop = r.field(d, "stop", "decoder Strip");
    if (!start.is_number_unsigned() || !stop.is_number_unsigned())
      r.fail("decoder Strip", "start and stop must be non-negative integers");
    dec.start = start.get<size_t>();
    dec.stop = stop.get<size_t>();
  } else if (type == "Metaspace") {
    dec.kind = Decoder::Kind::kMetaspace;
    dec.pattern = d.contains("replacement") ? r.get_string(d, "replacement", "decoder Metaspace") : "\xE2\x96\x81";
    dec.strip_first_space = read_prepend_scheme(r, d, "decoder Metaspace") != PrependScheme::kNever;
  } else {
    r.fail("decoder", "type '" + type + "' is not supported by Tandem");
  }
  out.push_back(std::move(dec));
}

// Resolves a post-processor into the ids put before and after the text.
void read_post_processor(const Reader& r, const json& p, const TokenizerSpec& spec,
                         std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) {
  if (p.is_null()) return;
  const std::string type = r.type_of(p, "post_processor");
  auto id_of = [&](const std::string& text, const std::string& where) {
    for (size_t i = 0; i < spec.tokens.size(); ++i)
      if (spec.tokens[i] == text) return static_cast<int32_t>(i);
    r.fail(where, "token '" + text + "' is not in the vocabulary");
  };
  if (type == "Sequence") {
    for (const json& child : r.field(p, "processors", "post_processor Sequence"))
      read_post_processor(r, child, spec, prefix, suffix);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets; adds no tokens.
  } else if (type == "TemplateProcessing") {
    const json& single = r.field(p, "single", "post_processor TemplateProcessing");
    const json& specials = p.contains("special_tokens") ? p.at("special_tokens") : json::object();
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken"))
        r.fail("post_processor TemplateProcessing", "item is neither Sequence nor SpecialToken");
      const std::string name = r.get_string(item.at("SpecialToken"), "id", "post_processor TemplateProcessing");
      std::vector<int32_t> ids;
      if (specials.contains(name) && specials.at(name).contains("ids")) {
        for (const json& id : specials.at(name).at("ids")) {
          if (!id.is_number_integer()) r.fail("post_processor TemplateProcessing", "special token ids must be integers");
          ids.push_back(id.get<int32_t>());
        }
      } else {
        ids.push_back(id_of(name, "post_processor TemplateProcessing"));
      }
      auto& target = seen_sequence ? suffix : prefix;
      target.insert(target.end(), ids.begin(), ids.end());
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    const json& cls = r.field(p, "cls", "post_processor " + type);
    const json& sep = r.field(p, "sep", "post_processor " + type);
    if (!cls.is_array() || cls.size() != 2 || !sep.is_array() || sep.size() != 2 ||
        !cls[1].is_number_integer() || !sep[1].is_number_integer())
      r.fail("post_processor " + type, "cls and sep must be [text, id]");
    prefix.push_back(cls[1].get<int32_t>());
    suffix.push_back(sep[1].get<int32_t>());
  } else {
    r.fail("post_processor", "type '" + type + "' is not supported by Tandem");
  }
}

std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string())
    return v.at("content").get<std::string>();
  return std::nullopt;
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(source + ": not valid JSON: " + e.what());
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TokenizerSpec spec_from_tokenizer_json_text(const std::string& tokenizer_json_text,
                                            const std::string& config_text,
                                            const std::string& source_name) {
  const Reader r{source_name};
  const json root = parse_json(tokenizer_json_text, source_name);
  if (!root.is_object()) r.fail("top level", "expected a JSON object");
  const json config = config_text.empty() ? json::object() : parse_json(config_text, source_name + " (tokenizer_config.json)");

  TokenizerSpec spec;
  spec.source = source_name;
  const json& model = r.field(root, "model", "top level");
  const std::string model_type = model.contains("type") ? r.type_of(model, "model") : "BPE";
  if (model_type != "BPE") r.fail("model", "type '" + model_type + "' is not supported by Tandem (only BPE)");
  if (model.contains("dropout") && !model.at("dropout").is_null() &&
      !(model.at("dropout").is_number() && model.at("dropout").get<double>() == 0.0))
    r.fail("model", "BPE dropout is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model.at(key).is_null() &&
        !(model.at(key).is_string() && model.at(key).get<std::string>().empty()))
      r.fail("model", std::string(key) + " is not supported");
  }

  // Vocabulary: model.vocab plus added tokens (which may extend it).
  const json& vocab = r.field(model, "vocab", "model");
  if (!vocab.is_object()) r.fail("model.vocab", "expected an object of token -> id");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > (1 << 24))
      r.fail("model.vocab", "id of '" + it.key() + "' is not a valid id");
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  const json added = root.contains("added_tokens") && root.at("added_tokens").is_array() ? root.at("added_tokens") : json::array();
  for (const json& a : added) {
    const json& id = r.field(a, "id", "added_tokens");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      r.fail("added_tokens", "id is not a valid id");
    max_id = std::max(max_id, id.get<int64_t>());
  }
  spec.tokens.resize(static_cast<size_t>(max_id + 1));
  for (auto it = vocab.begin(); it != vocab.end(); ++it) spec.tokens[it.value().get<size_t>()] = it.key();
  for (const json& a : added) {
    AddedToken t;
    t.id = a.at("id").get<int32_t>();
    t.content = r.get_string(a, "content", "added_tokens");
    t.special = r.get_bool(a, "special", false);
    t.lstrip = r.get_bool(a, "lstrip", false);
    t.rstrip = r.get_bool(a, "rstrip", false);
    t.single_word = r.get_bool(a, "single_word", false);
    t.normalized = r.get_bool(a, "normalized", !t.special);
    spec.tokens[t.id] = t.content;
    spec.added_tokens.push_back(std::move(t));
  }

  // Merges: "a b" strings or ["a", "b"] pairs.
  const json& merges = r.field(model, "merges", "model");
  if (!merges.is_array()) r.fail("model.merges", "expected an array");
  spec.merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) r.fail("model.merges", "merge '" + s + "' is not two tokens");
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.fail("model.merges", "each merge must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  spec.byte_fallback = r.get_bool(model, "byte_fallback", false);
  spec.fuse_unk = r.get_bool(model, "fuse_unk", false);
  spec.ignore_merges = r.get_bool(model, "ignore_merges", false);

  auto find_token = [&](const std::string& text) -> std::optional<int32_t> {
    for (const AddedToken& t : spec.added_tokens)
      if (t.content == text) return t.id;
    if (vocab.contains(text)) return vocab.at(text).get<int32_t>();
    return std::nullopt;
  };
  if (model.contains("unk_token") && model.at("unk_token").is_string()) {
    spec.unk_id = find_token(model.at("unk_token").get<std::string>());
    if (!spec.unk_id) r.fail("model.unk_token", "'" + model.at("unk_token").get<std::string>() + "' is not in the vocabulary");
  }

  read_normalizer(r, root.value("normalizer", json()), spec.normalizers);
  read_pre_tokenizer(r, root.value("pre_tokenizer", json()), spec.pre_tokenizers);
  read_decoder(r, root.value("decoder", json()), spec.decoders);
  read_post_processor(r, root.value("post_processor", json()), spec, spec.prefix_ids, spec.suffix_ids);

  bool byte_level = false;
  for (const auto& pt : spec.pre_tokenizers) byte_level = byte_level || pt.kind == PreTokenizer::Kind::kByteLevel;
  spec.kind = byte_level ? ModelKind::kByteLevelBpe : ModelKind::kSentencePieceBpe;

  // bos/eos as tokenizer_config.json names them; otherwise as the
  // post-processor adds them.
  if (auto bos = config_token(config, "bos_token")) spec.bos_id = find_token(*bos);
  if (auto eos = config_token(config, "eos_token")) spec.eos_id = find_token(*eos);
  if (auto pad = config_token(config, "pad_token")) spec.pad_id = find_token(*pad);
  if (!spec.bos_id && !spec.prefix_ids.empty()) spec.bos_id = spec.prefix_ids.front();
  if (!spec.eos_id && !spec.suffix_ids.empty()) spec.eos_id = spec.suffix_ids.back();
  return spec;
}

TokenizerSpec spec_from_tokenizer_json(const std::string& tokenizer_json_path, const std::string& config_path) {
  const std::string text = read_file(tokenizer_json_path);
  const std::string config = config_path.empty() ? std::string() : read_file(config_path);
  return spec_from_tokenizer_json_text(text, config, tokenizer_json_path);
}

}  // namespace tandem::tok

namespace tandem {

std::unique_ptr<Tokenizer> Tokenizer::from_hf_files(const std::string& tokenizer_json_path,
                                                    const std::string& tokenizer_config_path) {
  return std::make_unique<tok::BpeTokenizer>(
      tok::spec_from_tokenizer_json(tokenizer_json_path, tokenizer_config_path));
}

}  // namespace tandem
