// Replaced by the sampler sources.
