"""The paged KV cache: pages of `page_size` tokens handed to sequences, and the tensors behind them.

Every layer's keys and values live in one memory region, viewed as
[layers, 2, slots, kv_heads, head_dim] where slot = page * page_size + offset. The last page is
never handed out: padding tokens of a CUDA-graph step write their keys there.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import torch

from ember.llm.engines.builtin.sequence import Sequence


class MemoryRegion(Protocol):
    """Bytes the cache lives in; `release` gives them back, `restore` takes them again."""

    @property
    def tensor(self) -> torch.Tensor: ...

    def release(self) -> None: ...

    def restore(self) -> None: ...


class BlockAllocator:
    """Hands pages to sequences as they grow and takes them back when they finish."""

    def __init__(self, num_pages: int, page_size: int) -> None:
        self.page_size = page_size
        self.free_pages = deque(range(num_pages))

    def pages_missing(self, seq: Sequence, new_tokens: int) -> int:
        needed = -(-(seq.num_computed + new_tokens) // self.page_size)
        return max(0, needed - len(seq.block_table))

    def can_allocate(self, seq: Sequence, new_tokens: int) -> bool:
        return self.pages_missing(seq, new_tokens) <= len(self.free_pages)

    def allocate(self, seq: Sequence, new_tokens: int) -> None:
        for _ in range(self.pages_missing(seq, new_tokens)):
            seq.block_table.append(self.free_pages.popleft())

    def free(self, seq: Sequence) -> None:
        self.free_pages.extend(seq.block_table)
        seq.block_table = []


class KVCache:
    def __init__(
        self,
        region: MemoryRegion,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        page_size: int,
        dtype: torch.dtype,
    ) -> None:
        self.region, self.page_size, self.dtype = region, page_size, dtype
        self.shape = (num_layers, 2, -1, kv_heads, head_dim)
        self.slot_bytes = kv_heads * head_dim * dtype.itemsize
        self.num_pages = region.tensor.numel() // (num_layers * 2 * page_size * self.slot_bytes)
        self.scratch_slot = (self.num_pages - 1) * page_size
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._view()

    @staticmethod
    def bytes_per_page(
        num_layers: int, kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype
    ) -> int:
        return num_layers * 2 * page_size * kv_heads * head_dim * dtype.itemsize

    def usable_pages(self) -> int:
        return self.num_pages - 1  # the scratch page

    def slots(self, block_table: torch.Tensor, length: int) -> torch.Tensor:
        """The cache slots of positions 0..length-1 of a sequence with this block table."""
        pages = block_table[: -(-length // self.page_size)].long()
        offsets = torch.arange(self.page_size, device=pages.device)
        return (pages[:, None] * self.page_size + offsets).flatten()[:length]

    def release(self) -> None:
        self.layers = []
        self.region.release()

    def restore(self) -> None:
        self.region.restore()
        self._view()

    def _view(self) -> None:
        usable = self.num_pages * self.page_size * self.slot_bytes * self.shape[0] * 2
        tensor = self.region.tensor[:usable].view(self.dtype).view(self.shape)
        self.layers = [(layer[0], layer[1]) for layer in tensor]
