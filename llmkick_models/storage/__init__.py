"""Compressed weights on disk: the compressed-model cache, the packed export and GGUF conversion."""
