// Replaced by the tokenizer sources.
