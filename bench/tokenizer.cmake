# Tokenizer speed benchmark.
