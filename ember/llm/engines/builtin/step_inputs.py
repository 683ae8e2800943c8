"""One step's inputs (token ids, positions, cache slots, attention work list) in one fixed buffer.

Every field sits at a fixed offset of one int64 buffer on the device, so a CUDA graph captured
for a step size reads the same addresses each time it is replayed: `fill` writes a step into a
pinned host copy and moves it over in one copy. A step of `size` tokens is padded: extra tokens
write their keys to the cache's scratch slot and no attention program works for them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ember.llm.engines.builtin.attention import AttentionMetadata, queries_per_program
from ember.llm.engines.builtin.scheduler import ScheduledBatch
from ember.llm.engines.builtin.settings import EngineSettings

Shape = tuple[int, int, int]  # tokens, sequences, attention programs


@dataclass(frozen=True)
class StepViews:
    input_ids: torch.Tensor
    positions: torch.Tensor
    logits_index: torch.Tensor  # the last token of each sequence: the rows that get logits
    metadata: AttentionMetadata


class StepInputs:
    def __init__(
        self, settings: EngineSettings, max_tokens: int, group: int, device: torch.device
    ) -> None:
        self.cuda = device.type == "cuda"
        self.page_size, self.pages = settings.page_size, settings.pages_per_seq()
        self.max_seqs = min(settings.max_seqs, max_tokens)
        self.per_program = queries_per_program(group)
        tokens, seqs = max_tokens, self.max_seqs
        programs = self._programs(tokens)
        sizes = self._lengths(tokens, seqs, programs)
        self.offsets = dict(
            zip(sizes, itertools.accumulate(sizes.values(), initial=0), strict=False)
        )
        total = sum(sizes.values())
        self.host = torch.zeros(total, dtype=torch.int64, pin_memory=self.cuda)
        self.device = (
            torch.zeros(total, dtype=torch.int64, device=device) if self.cuda else self.host
        )
        self.spans: list[tuple[int, int, int]] = []  # see AttentionMetadata, refilled in place
        self._views: dict[Shape, StepViews] = {}

    def fill(self, batch: ScheduledBatch, scratch_slot: int, size: int | None) -> Shape:
        """Write `batch`, padded to `size` tokens (None: no padding); returns the step's shape."""
        n = len(batch.seqs)
        counts = np.fromiter(batch.num_new, np.int64, n)
        starts = np.fromiter((s.num_computed for s in batch.seqs), np.int64, n)
        query_start = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=query_start[1:])
        total = int(query_start[-1])
        per_seq = -(-counts // self.per_program)
        if size is None:
            shape = (total, n, int(per_seq.sum()))
        else:
            shape = (size, min(size, self.max_seqs), self._programs(size))
        self._pad(scratch_slot, shape)
        f = self._host(shape)
        seqs = zip(batch.seqs, starts.tolist(), counts.tolist(), strict=True)
        tokens = itertools.chain.from_iterable(s.token_ids[a : a + c] for s, a, c in seqs)
        f["input_ids"][:total] = np.fromiter(tokens, np.int64, total)
        positions = np.arange(total) - np.repeat(query_start[:-1] - starts, counts)
        f["positions"][:total] = positions
        tables = f["block_tables"].reshape(shape[1], self.pages)
        for i, seq in enumerate(batch.seqs):
            tables[i, : len(seq.block_table)] = seq.block_table
        pages = tables[np.repeat(np.arange(n), counts), positions // self.page_size]
        f["slots"][:total] = pages * self.page_size + positions % self.page_size
        f["seq_lens"][:n] = starts + counts
        f["query_start"][: n + 1] = query_start
        f["query_start"][n + 1 :] = total
        f["logits_index"][:n] = query_start[1:] - 1
        programs = int(per_seq.sum())
        f["q_block_seq"][:programs] = np.repeat(np.arange(n), per_seq)
        first = np.arange(programs) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)
        f["q_block_first"][:programs] = first * self.per_program
        if self.cuda:
            self.device.copy_(self.host, non_blocking=True)
        else:
            ends = (starts + counts).tolist()
            self.spans[:] = zip(
                query_start[:-1].tolist(), query_start[1:].tolist(), ends, strict=True
            )
        return shape

    def fill_idle(self, scratch_slot: int, size: int) -> Shape:
        """A step of `size` padding tokens: for measuring memory and capturing graphs."""
        shape = (size, min(size, self.max_seqs), self._programs(size))
        self._pad(scratch_slot, shape)
        self.device.copy_(self.host)
        return shape

    def views(self, tokens: int, seqs: int, programs: int) -> StepViews:
        shape = (tokens, seqs, programs)
        if shape not in self._views:
            d = {k: self.device[r] for k, r in self._ranges(*shape).items()}
            metadata = AttentionMetadata(
                slot_mapping=d["slots"], block_tables=d["block_tables"].view(seqs, self.pages),
                seq_lens=d["seq_lens"], query_start=d["query_start"], q_block_seq=d["q_block_seq"],
                q_block_first=d["q_block_first"], spans=self.spans,
            )  # fmt: skip
            self._views[shape] = StepViews(
                d["input_ids"], d["positions"], d["logits_index"], metadata
            )
        return self._views[shape]

    def _programs(self, tokens: int) -> int:
        """Attention programs for any step of `tokens` tokens: each sequence may add one."""
        return -(-tokens // self.per_program) + min(tokens, self.max_seqs)

    def _pad(self, scratch_slot: int, shape: Shape) -> None:
        f = self._host(shape)
        for name in ("input_ids", "positions", "seq_lens", "query_start", "logits_index"):
            f[name][:] = 0
        f["slots"][:] = scratch_slot
        f["q_block_seq"][:] = -1

    def _lengths(self, tokens: int, seqs: int, programs: int) -> dict[str, int]:
        return {
            "input_ids": tokens, "positions": tokens, "slots": tokens, "seq_lens": seqs,
            "query_start": seqs + 1, "q_block_seq": programs, "q_block_first": programs,
            "logits_index": seqs, "block_tables": seqs * self.pages,
        }  # fmt: skip

    def _ranges(self, tokens: int, seqs: int, programs: int) -> dict[str, slice]:
        lengths = self._lengths(tokens, seqs, programs)
        return {k: slice(self.offsets[k], self.offsets[k] + n) for k, n in lengths.items()}

    def _host(self, shape: Shape) -> dict[str, np.ndarray]:
        host = self.host.numpy()
        return {k: host[r] for k, r in self._ranges(*shape).items()}
