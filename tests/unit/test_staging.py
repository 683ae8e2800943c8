"""How the engine's weight upload cuts host tensors into staging-sized parts.

The copy itself (pinned buffers, CUDA streams) needs a GPU: bench/weights.py runs it on one and
checks every byte landed.
"""

from __future__ import annotations

import pytest
import torch

from ember.llm.engines.builtin.staging import as_bytes, split


def test_parts_cover_every_byte_in_order_and_none_is_larger_than_a_chunk() -> None:
    sources = [torch.arange(n, dtype=torch.uint8) for n in (0, 5, 20, 8)]
    targets = [torch.zeros(n, dtype=torch.uint8) for n in (0, 5, 20, 8)]
    parts = split(list(zip(sources, targets, strict=True)), chunk=8)
    assert [len(source) for source, _ in parts] == [5, 8, 8, 4, 8]
    for source, target in parts:
        target.copy_(source)  # what a lane does through its staging buffer
    assert all(torch.equal(s, t) for s, t in zip(sources, targets, strict=True))


def test_a_source_and_a_target_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="a 4-byte source for a 6-byte target"):
        split([(torch.zeros(4, dtype=torch.uint8), torch.zeros(6, dtype=torch.uint8))])


def test_bytes_of_a_bf16_matrix_are_a_flat_view_of_its_memory() -> None:
    matrix = torch.ones(3, 4, dtype=torch.bfloat16)
    raw = as_bytes(matrix)
    assert raw.shape == (24,) and raw.data_ptr() == matrix.data_ptr()
