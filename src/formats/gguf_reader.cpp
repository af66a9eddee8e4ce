// Implemented by the formats work.
