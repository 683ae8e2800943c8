"""LLM serving: models, engines and the OpenAI-compatible layer."""
