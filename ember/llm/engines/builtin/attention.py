"""Paged attention plugged into transformers' model code (its `AttentionInterface`).

transformers' modules compute queries, keys and values as usual; this function stores each layer's
new keys and values in the engine's paged KV cache, then attends over the cache. On the GPU that
is one Triton kernel for the whole step (`triton_attention.py`); on the CPU each sequence goes
through transformers' own SDPA function, fed exactly what `generate` would feed it, so greedy
output stays equal to `generate`'s token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ember.llm.engines.builtin.kv_cache import KVCache

NAME = "ember_paged"  # the attn_implementation the engine's models run with
MIN_DOT_ROWS = 16  # the GPU kernel's tl.dot needs at least 16 rows


def queries_per_program(num_queries_per_kv: int) -> int:
    """Query tokens per GPU program: enough that tokens x grouped heads fill a 16-row dot."""
    padded_group = 1 << (num_queries_per_kv - 1).bit_length()
    return max(1, MIN_DOT_ROWS // padded_group)


@dataclass
class AttentionMetadata:
    """Where one step's tokens go in the cache and what each sequence attends over."""

    slot_mapping: torch.Tensor  # [tokens] cache slot of each new token's key and value
    block_tables: torch.Tensor  # [sequences, pages] int32
    seq_lens: torch.Tensor  # [sequences] tokens cached once this step's are written
    query_start: torch.Tensor  # [sequences + 1] first token of each sequence in the step
    q_block_seq: torch.Tensor  # [programs] the GPU kernel's work list (see triton_attention.py)
    q_block_first: torch.Tensor
    spans: list[tuple[int, int, int]]  # CPU path: (first token, end token, sequence length)


class PagedAttention:
    """The attention function of every layer, bound to one KV cache; `metadata` is set per step."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.metadata: AttentionMetadata | None = None
        AttentionInterface.register(NAME, self)

    def __call__(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,  # [1, heads, tokens, head_dim]
        key: torch.Tensor,  # [1, kv_heads, tokens, head_dim]
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        meta = self.metadata
        assert meta is not None, "attention called outside a step"
        keys, values = self.cache.layers[int(module.layer_idx)]  # type: ignore[arg-type]
        keys.index_copy_(0, meta.slot_mapping, key[0].transpose(0, 1))
        values.index_copy_(0, meta.slot_mapping, value[0].transpose(0, 1))
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        if query.is_cuda:
            from ember.llm.engines.builtin.triton_attention import paged_attention

            out = paged_attention(
                query[0].transpose(0, 1), keys, values, meta.block_tables, meta.seq_lens,
                meta.query_start, meta.q_block_seq, meta.q_block_first, scale, self.cache.page_size,
            )  # fmt: skip
            return out.unsqueeze(0), None
        return self._attend_per_sequence(module, query, key, value, scale), None

    def _attend_per_sequence(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        meta = self.metadata
        assert meta is not None
        keys, values = self.cache.layers[int(module.layer_idx)]  # type: ignore[arg-type]
        outputs = []
        for seq, (start, end, length) in enumerate(meta.spans):
            q = query[:, :, start:end]
            if length == end - start:  # a whole prompt: generate's prefill, is_causal and all
                k, v, mask = key[:, :, start:end], value[:, :, start:end], None
            else:
                slots = self.cache.slots(meta.block_tables[seq], length)
                k = keys[slots].transpose(0, 1).unsqueeze(0)
                v = values[slots].transpose(0, 1).unsqueeze(0)
                mask = None if end - start == 1 else _causal_tail(end - start, length)
            out, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=scale)
            outputs.append(out)
        return torch.cat(outputs, dim=1)


def _causal_tail(queries: int, length: int) -> torch.Tensor:
    """The causal mask of the last `queries` positions of a sequence over all its `length`."""
    positions = torch.arange(length - queries, length).unsqueeze(1)
    return (torch.arange(length).unsqueeze(0) <= positions)[None, None]
