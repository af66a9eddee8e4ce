// Replaced by the chat template sources.
