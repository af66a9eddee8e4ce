// Tokenizer <-> GGUF metadata (tokenizer.ggml.*).
//
// GGUF names the pre-tokenizer by a short name (tokenizer.ggml.pre); the
// table in tokenizer_gguf.cpp maps each name Tandem knows to the regex,
// normalizer and ignore_merges flag that the model's tokenizer.json declares.
#pragma once

#include "formats/gguf.h"
#include "tokenizer/tokenizer_spec.h"

namespace tandem::tok {

// Throws tandem::Error naming the file and key when the metadata is missing,
// has the wrong type, or names a model or pre-tokenizer Tandem does not know.
TokenizerSpec spec_from_gguf(const gguf::GgufFile& file);

// Writes the keys spec_from_gguf() reads. Throws tandem::Error when the spec
// uses a pipeline GGUF cannot name (the message says which part).
void write_spec_to_gguf(const TokenizerSpec& spec, gguf::GgufWriter& writer);

}  // namespace tandem::tok
