"""The engine's core, in the engine process: a scheduler, a model runner, and `step`.

`step` is the whole engine: the scheduler picks the tokens to compute, the runner computes them
and samples, the scheduler records the new tokens and says which requests are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ember.llm.engines.builtin.kv_cache import BlockAllocator
from ember.llm.engines.builtin.messages import (
    AddRequest,
    EngineReady,
    GraphsCaptured,
    RequestOutput,
    StepOutputs,
)
from ember.llm.engines.builtin.model_runner import ModelRunner
from ember.llm.engines.builtin.scheduler import Scheduler
from ember.llm.engines.builtin.sequence import Sequence
from ember.llm.engines.builtin.settings import EngineSettings
from ember.llm.models import ModelError
from ember.runtime import phases

# Builds the model inside the engine process: (model, end-of-sequence token ids).
ModelLoader = Callable[[torch.device], tuple[torch.nn.Module, list[int]]]


class EngineCore:
    def __init__(self, settings: EngineSettings, load: ModelLoader) -> None:
        if settings.cuda and not torch.cuda.is_available():
            raise ModelError(
                "service.gpu is set but the engine sees no CUDA device (is the NVIDIA driver "
                "there?); leave service.gpu out to serve on the CPU"
            )
        self.device = torch.device("cuda" if settings.cuda else "cpu")
        model, eos_token_ids = load(self.device)
        _check(model, settings)
        self.runner = ModelRunner(model, settings, self.device)
        allocator = BlockAllocator(self.runner.cache.usable_pages(), settings.page_size)
        self.scheduler = Scheduler(
            allocator, settings.max_seqs, self.runner.max_tokens, settings.max_model_len,
            eos_token_ids,
        )  # fmt: skip
        self.capture_seconds = 0.0  # the idle time spent capturing graphs so far

    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        if all(seq.num_output_tokens for seq in batch.seqs):  # no first token waits for a capture
            self.runner.capture_for(batch.num_tokens)
        sampled = self.runner.run(batch)
        return self.scheduler.update(batch, sampled)

    def add(self, request: AddRequest) -> None:
        self.scheduler.add(Sequence.of(request.request_id, request.prompt_ids, request.params))

    def abort(self, request_ids: list[str]) -> None:
        self.scheduler.abort(request_ids)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def report(self, outputs: list[RequestOutput]) -> StepOutputs:
        pages = self.runner.cache.usable_pages()
        used = pages - len(self.scheduler.allocator.free_pages)
        waiting = len(self.scheduler.waiting)
        running, preemptions = len(self.scheduler.running), self.scheduler.preemptions
        return StepOutputs(outputs, running, waiting, used / pages, preemptions)

    def has_graphs_to_capture(self) -> bool:
        return bool(self.runner.uncaptured) and not self.runner.asleep

    def capture_next(self) -> GraphsCaptured | None:
        """Capture the smallest graph not captured yet (the engine is idle); say when all are."""
        start = time.perf_counter()
        self.runner.capture(self.runner.uncaptured[0])
        self.capture_seconds += time.perf_counter() - start
        if self.runner.uncaptured:
            return None
        return GraphsCaptured(len(self.runner.graphs), self.capture_seconds)

    def sleep(self) -> None:
        self.runner.sleep()

    def wake_up(self) -> None:
        self.runner.wake_up()

    def ready(self) -> EngineReady:
        cuda = self.device.type == "cuda"
        return EngineReady(
            device=f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu",
            kv_cache_tokens=self.runner.cache.usable_pages() * self.runner.settings.page_size,
            graph_sizes=list(self.runner.uncaptured),
            phases=phases.take(),
        )


def read_pretrained(path: str, cuda: bool) -> ModelLoader:
    """Read a Hugging Face model folder into host memory now, without touching CUDA (bf16 for a
    GPU, float32 for the CPU); the loader hands it to the engine process, which moves it over."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # its thread is lost at fork
    # float32 on the CPU: as fast as bf16 there without AMX, and no ties from rounding.
    dtype = torch.bfloat16 if cuda else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(Path(path), dtype=dtype)
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.get_text_config().eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    return lambda _device: (model, eos_ids)


def _check(model: torch.nn.Module, settings: EngineSettings) -> None:
    text = model.config.get_text_config()  # type: ignore[union-attr,operator]
    limit = getattr(text, "max_position_embeddings", None)
    if limit is not None and settings.max_model_len > limit:
        raise ModelError(
            f"model.max_model_len {settings.max_model_len} is beyond what this model supports "
            f"({limit}); lower it in the config"
        )
    window = getattr(text, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(text, "layer_types", None) or [])
    if sliding and window is not None and settings.max_model_len > window:
        raise ModelError(
            f"this model attends over a sliding window of {window} tokens, which the built-in "
            f"engine does not implement: lower model.max_model_len to {window}, or serve it "
            "with --engine vllm"
        )
