"""The built-in engine: paged attention and CUDA graphs over transformers' model code, in a process
of its own (nano-vllm's shape: engine, scheduler, kv_cache, model_runner, sampling, sequence)."""
