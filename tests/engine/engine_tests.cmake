# Engine tests.
