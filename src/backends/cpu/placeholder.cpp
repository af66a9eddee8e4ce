// Replaced by the kernel sources.
