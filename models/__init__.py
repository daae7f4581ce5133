"""Chat backends (embedded llama.cpp, OpenAI-compatible servers), the model catalog and settings."""
