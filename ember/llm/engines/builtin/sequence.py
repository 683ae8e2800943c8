"""One request inside the engine: its tokens, sampling settings, KV-cache pages and progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from ember.llm.engines.base import SamplingParams


class Status(Enum):
    WAITING = auto()  # not in the batch: new, or preempted (its cache pages were taken back)
    RUNNING = auto()


@dataclass(eq=False)
class Sequence:
    request_id: str
    token_ids: list[int]  # the prompt, then every token generated so far
    num_prompt_tokens: int
    params: SamplingParams
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose keys and values are in the cache
    status: Status = Status.WAITING

    @classmethod
    def of(cls, request_id: str, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        return cls(request_id, list(prompt_ids), len(prompt_ids), params)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    def preempt(self) -> None:
        """Forget the cache: the sequence is computed again, prompt and output, when readmitted."""
        self.num_computed = 0
        self.status = Status.WAITING
