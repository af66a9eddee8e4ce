// Reads a Hugging Face tokenizer.json (+ tokenizer_config.json) into a
// TokenizerSpec. Every component type it does not know is an error that
// names the type, never a silent approximation.
#pragma once

#include <string>

#include "tokenizer/tokenizer_spec.h"

namespace tandem::tok {

// `config_path` may be empty. Throws tandem::Error naming the file and field.
TokenizerSpec spec_from_tokenizer_json(const std::string& tokenizer_json_path,
                                       const std::string& config_path);

// Same, from already-read texts (used by tests). `config_text` may be empty.
TokenizerSpec spec_from_tokenizer_json_text(const std::string& tokenizer_json_text,
                                            const std::string& config_text,
                                            const std::string& source_name);

}  // namespace tandem::tok
