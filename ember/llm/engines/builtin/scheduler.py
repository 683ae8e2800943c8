"""Which tokens the next step computes: iteration-level scheduling under a token budget.

Each step has a budget of `max_batched_tokens`. Running sequences come first, oldest first: one
token each while decoding, or the next chunk of a long prompt. Waiting ones are admitted after,
while the budget, `max_seqs` and free cache pages allow. When a running sequence needs a page and
none is free, the newest running one is preempted: its pages are taken back and it is computed
again later. `schedule` and `update` do no I/O: the engine runs the model between them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ember.llm.engines.builtin.kv_cache import BlockAllocator
from ember.llm.engines.builtin.messages import FinishReason, RequestOutput
from ember.llm.engines.builtin.sequence import Sequence, Status


@dataclass(frozen=True)
class ScheduledBatch:
    seqs: list[Sequence]
    num_new: list[int]  # tokens each sequence computes in this step

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


class Scheduler:
    def __init__(
        self,
        allocator: BlockAllocator,
        max_seqs: int,
        max_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: list[int],
    ) -> None:
        self.allocator = allocator
        self.max_seqs, self.max_batched_tokens = max_seqs, max_batched_tokens
        self.max_model_len, self.eos_token_ids = max_model_len, set(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.by_id: dict[str, Sequence] = {}
        self.preemptions = 0

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self.by_id[seq.request_id] = seq

    def abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            seq = self.by_id.pop(request_id, None)
            if seq is None:
                continue  # finished meanwhile
            if seq.status is Status.RUNNING:
                self.running.remove(seq)
            else:
                self.waiting.remove(seq)
            self.allocator.free(seq)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch([], [])
        budget = self.max_batched_tokens
        preemptions = self.preemptions
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not Status.RUNNING:
                continue  # preempted just now, to make room for an older one
            count = min(seq.num_uncomputed, budget)
            if not self._make_room(seq, count):
                break  # it was the newest and went back to waiting
            self._take(batch, seq, count)
            budget -= count
        # No admissions in a step that had to preempt: the cache is full.
        admit = self.preemptions == preemptions
        while admit and self.waiting and budget and len(self.running) < self.max_seqs:
            seq = self.waiting[0]
            count = min(seq.num_uncomputed, budget)
            if not self.allocator.can_allocate(seq, count):
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            self._take(batch, seq, count)
            budget -= count
        return batch

    def update(self, batch: ScheduledBatch, sampled: list[int]) -> list[RequestOutput]:
        """Record a step's results; the new token of every sequence that finished its input."""
        outputs = []
        for seq, count, token in zip(batch.seqs, batch.num_new, sampled, strict=True):
            seq.num_computed += count
            if seq.num_computed < seq.num_tokens:
                continue  # a prompt chunk: the token predicted inside the prompt is not used
            seq.token_ids.append(token)
            reason = self._finish_reason(seq, token)
            outputs.append(RequestOutput(seq.request_id, [token], reason))
            if reason is not None:
                self.running.remove(seq)
                del self.by_id[seq.request_id]
                self.allocator.free(seq)
        return outputs

    def _take(self, batch: ScheduledBatch, seq: Sequence, count: int) -> None:
        self.allocator.allocate(seq, count)
        batch.seqs.append(seq)
        batch.num_new.append(count)

    def _make_room(self, seq: Sequence, count: int) -> bool:
        """Preempt the newest running sequences until `seq` fits; False if `seq` itself went."""
        while not self.allocator.can_allocate(seq, count):
            victim = self.running.pop()
            self.preemptions += 1
            self.allocator.free(victim)
            victim.preempt()
            self.waiting.appendleft(victim)
            if victim is seq:
                return False
        return True

    def _finish_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        if token in self.eos_token_ids and not seq.params.ignore_eos:
            return "stop"
        if seq.num_output_tokens >= seq.params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None
