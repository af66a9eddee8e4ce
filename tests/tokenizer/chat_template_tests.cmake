# Chat template tests.
