// Text <-> token ids, matching the model's reference tokenizer id for id.
//
// Two model kinds are supported, each loadable from tokenizer.json (+
// tokenizer_config.json) or from GGUF metadata (tokenizer.ggml.*):
//   - byte-level BPE (GPT-2 style byte mapping, pre-tokenizer regex run with
//     PCRE2): Qwen2/Qwen3, Llama-3 and similar.
//   - SentencePiece-style BPE with byte fallback: Llama-2, Mistral.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {
namespace gguf {
class GgufFile;
class GgufWriter;
}  // namespace gguf

// Where a streaming decode stands between tokens (see Tokenizer::decode_append).
struct TokenDecodeState {
  size_t tokens_seen = 0;     // tokens decoded so far (after skipping)
  size_t start_stripped = 0;  // characters removed so far by a start-of-text strip rule
  bool text_started = false;  // whether any character has been produced
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `tokenizer_config_path` may be empty. Throws tandem::Error naming the
  // file and the field on anything it cannot honour.
  static std::unique_ptr<Tokenizer> from_hf_files(const std::string& tokenizer_json_path,
                                                  const std::string& tokenizer_config_path);
  static std::unique_ptr<Tokenizer> from_gguf(const gguf::GgufFile& file);
  // `path` is a GGUF file, a Hugging Face model folder, or a folder holding
  // only tokenizer.json (+ tokenizer_config.json). Throws when none is found.
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  // add_special: apply the model's post-processor rules (BOS/EOS) as the
  // reference does with add_special_tokens=true. Special and added tokens
  // written in the text are recognised as the reference recognises them.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true) const = 0;
  // Concatenated text of `ids`, with the decoder tokenizer.json declares.
  // skip_special drops special tokens.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  virtual size_t vocab_size() const = 0;
  // The token's string as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>").
  virtual const std::string& token_text(int32_t id) const = 0;
  virtual std::optional<int32_t> token_id(std::string_view token_text) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  // Every id that ends a generation: eos plus end-of-turn tokens the model
  // declares (e.g. <|im_end|>, <|eot_id|>).
  virtual std::vector<int32_t> stop_ids() const = 0;
  // "byte-level BPE" or "SentencePiece BPE".
  virtual std::string kind_name() const = 0;
  // Text of bos/eos tokens (empty if none), as chat templates see them.
  virtual std::string bos_text() const = 0;
  virtual std::string eos_text() const = 0;

  // Writes the tokenizer.ggml.* keys that from_gguf() reads back to an
  // identical tokenizer (the same ids for every text).
  virtual void write_gguf_metadata(gguf::GgufWriter& writer) const = 0;

  // Appends the raw bytes of one token to `bytes`, continuing a decode that
  // `state` describes. Over a whole sequence the bytes equal decode() of it
  // whenever that text is valid UTF-8; a piece may end inside a character.
  // The default decodes the id alone (no state), for tokenizers without
  // context-dependent decoders.
  virtual void decode_append(int32_t id, bool skip_special, TokenDecodeState& state,
                             std::string& bytes) const;
};

// Turns a stream of token ids into text pieces that are always whole UTF-8:
// bytes of an incomplete character are held back until it completes.
//
// PRECONDITIONS: `tokenizer` outlives the decoder; one decoder per stream,
// used from one thread at a time.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  // Text that became final with this token (may be empty).
  std::string push(int32_t id);
  // Whatever is held back at the end of the stream (invalid bytes become U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  TokenDecodeState state_;
  std::string pending_;  // bytes of a character that is not complete yet
};

}  // namespace tandem
