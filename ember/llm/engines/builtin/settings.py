"""EngineSettings: the built-in engine's knobs, resolved once from LLMConfig and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ember.llm.config import LLMConfig

GPU_BATCHED_TOKENS = 2048  # tokens per step on a GPU: every step up to this size is a CUDA graph
CPU_BATCHED_TOKENS = 512  # on the CPU, bigger prompt chunks only add latency for the others
PAGE_SIZE = 64  # tokens per KV-cache page


@dataclass(frozen=True)
class EngineSettings:
    model_path: str
    max_model_len: int
    max_seqs: int  # sequences in one step (the app's max_concurrent_requests)
    cuda: bool  # a GPU was asked for (service.gpu); decided from the config, never by asking CUDA
    gpu_memory_utilization: float  # share of the GPU's memory for this engine, all included
    cuda_graphs: bool
    cpu_kv_cache_bytes: int
    page_size: int = PAGE_SIZE

    @classmethod
    def of(cls, config: LLMConfig) -> EngineSettings:
        # VLLM_CPU_KVCACHE_SPACE (GiB), as vLLM reads it, so one config.yaml serves both engines.
        gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        return cls(
            model_path=config.model_path,
            max_model_len=config.model.max_model_len,
            max_seqs=config.service.max_concurrent_requests,
            cuda=config.gpu is not None,
            gpu_memory_utilization=config.model.gpu_memory_utilization,
            cuda_graphs=not config.service.fast_boot,
            cpu_kv_cache_bytes=int(gib * 2**30),
        )

    def batched_tokens(self, cuda: bool) -> int:
        return max(GPU_BATCHED_TOKENS if cuda else CPU_BATCHED_TOKENS, self.max_seqs)

    def pages_per_seq(self) -> int:
        return -(-self.max_model_len // self.page_size)


def graph_sizes(max_tokens: int) -> list[int]:
    """Step sizes (tokens) that get a CUDA graph: fine-grained where decode batches are."""
    sizes, size = [1, 2, 4, 8], 16
    while size < max_tokens:
        sizes.append(size)
        size += 16 if size < 256 else 64 if size < 512 else 128 if size < 1024 else 256
    return [s for s in sizes if s < max_tokens] + [max_tokens]
