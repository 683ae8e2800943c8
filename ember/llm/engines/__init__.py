"""Engines behind the LLM app: the built-in one (transformers) and vLLM, one file each."""
