# CPU kernel and memory-bandwidth benchmarks.
