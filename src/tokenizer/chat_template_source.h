// Where a model keeps its chat template: GGUF `tokenizer.chat_template`, or
// in a Hugging Face folder `chat_template` of tokenizer_config.json (else the
// chat_template.jinja file beside it).
#pragma once

#include <string>

namespace tandem {

// The template source of the model (or tokenizer folder) at `path`; empty
// when it has none. Throws tandem::Error on a malformed tokenizer_config.json
// or GGUF file.
std::string chat_template_source(const std::string& path);

}  // namespace tandem
