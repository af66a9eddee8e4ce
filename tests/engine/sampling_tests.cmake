# Sampler tests.
