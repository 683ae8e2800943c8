"""What the LLM app needs from an engine, and what Ember's OpenAI layer needs from one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ember.llm.detokenizer import IncrementalDecoder


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # go on past end-of-sequence tokens (benchmarks)


@dataclass(frozen=True)
class Step:
    """New tokens of one request; `finish_reason` is set on its last step."""

    token_ids: list[int]
    finish_reason: Literal["stop", "length"] | None = None


class EngineDeadError(Exception):
    """The engine cannot serve any more requests (its process died); the replica ends itself."""


class Engine(Protocol):
    """Loaded once in the process replicas fork from, started in each replica, stopped in its
    exit hook; put to sleep before the replica is parked and woken after it is restored."""

    def load(self) -> None:
        """Import what the engine needs and read what it can into host memory, without
        initialising CUDA (a process that forks replicas cannot hand them a CUDA context)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def sleep(self) -> None:
        """Give back accelerator memory (weights parked in host memory, KV cache freed)."""

    async def wake_up(self) -> None: ...

    @property
    def is_sleeping(self) -> bool: ...

    def pids(self) -> list[int]:
        """The processes that hold the engine's accelerator state (to checkpoint them)."""
        ...


class TokenEngine(Engine, Protocol):
    """An engine Ember's own OpenAI layer serves: tokens in, tokens out."""

    served_model_name: str
    max_model_len: int

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_token_chars(self) -> int:
        """The most characters one token stands for: prompts longer than this times
        max_model_len cannot fit, and are refused before they are tokenized."""
        ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def decode_stream(self) -> IncrementalDecoder:
        """A fresh incremental decoder for one answer."""
        ...

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Step]:
        """Tokens as they are decoded; closing the iterator early cancels the request."""
        ...

    def metrics_text(self) -> bytes: ...
