"""The messages between the engine process and the replica that serves it, in both directions.

They travel pickled over two one-way pipes. Both ends always run the same code (the engine
process is forked from the replica), so, unlike `ember.wire`, these need no version. Outputs are
batched: one `StepOutputs` per engine step carries every request's new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from ember.llm.engines.base import SamplingParams

FinishReason = Literal["stop", "length"]
Command = Literal["sleep", "wake_up", "shutdown"]


# -- to the engine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class AbortRequests:
    request_ids: list[str]


@dataclass(frozen=True)
class Control:
    """Sleep, wake up or shut down; answered with `ControlDone` once done."""

    command: Command


ToEngine = AddRequest | AbortRequests | Control


# -- from the engine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineReady:
    device: str  # e.g. "cuda (NVIDIA H100 80GB HBM3)" or "cpu"
    kv_cache_tokens: int
    graph_sizes: list[int]  # step sizes that get a CUDA graph, captured after this message
    phases: dict[str, float]  # seconds: the parts of its start (CUDA, weights, KV cache...)


class RequestOutput(NamedTuple):  # a tuple: 128 of them pickle in a few microseconds
    request_id: str
    token_ids: list[int]
    finish_reason: FinishReason | None


@dataclass(frozen=True)
class StepOutputs:
    """A step's new tokens, and the engine's load after it (sent alone when it goes idle)."""

    outputs: list[RequestOutput]
    running: int
    waiting: int
    kv_cache_usage: float  # share of the cache's pages in use
    preemptions: int  # since the engine started


@dataclass(frozen=True)
class ControlDone:
    command: Command
    seconds: float


@dataclass(frozen=True)
class GraphsCaptured:
    """Every CUDA graph is captured (after EngineReady, between requests)."""

    count: int
    seconds: float  # spent capturing, in all


@dataclass(frozen=True)
class EngineFailed:
    """The engine cannot go on; it exits after sending this."""

    message: str


FromEngine = EngineReady | StepOutputs | ControlDone | GraphsCaptured | EngineFailed
