"""The built-in engine: transformers' continuous batching (paged attention), on CPU or CUDA.

Requests join the running batch as they arrive and leave it as they finish; each new token is
handed to the request's asyncio queue from the batching thread. Greedy requests (temperature 0)
and sampled ones share a batch: see GreedyOrTemperature.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching import ContinuousBatchingManager
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingTemperatureLogitsWarper,
)
from transformers.generation.logits_process import TemperatureLogitsWarper

from ember.llm.config import LLMConfig
from ember.llm.engines.base import SamplingParams, Step
from ember.llm.metrics import EngineMetrics
from ember.llm.models import ModelError

PAGE_SIZE = 256  # tokens per KV-cache page
CPU_BATCH_TOKENS = 512  # prefill chunk on the CPU, where big chunks only add latency
KV_PADDING = 1024  # tokens; CUDA graphs are captured per padded KV length
WEIGHT_ALIGNMENT = 64  # bytes: each parameter's slice of the parked buffer views as its dtype


class EngineError(Exception):
    """The engine failed a request (not the request's fault)."""


class PromptError(ValueError):
    """The messages cannot be turned into a prompt by the model's chat template."""


class GreedyOrTemperature(ContinuousBatchingTemperatureLogitsWarper):
    """Per-request temperature where 0 means greedy.

    The batch samples from the processed scores; a greedy row becomes a one-hot at its argmax,
    which sampling then picks with certainty, so greedy output is exactly `generate`'s.
    """

    def __call__(self, scores: torch.FloatTensor, tensor_arg: torch.Tensor) -> torch.FloatTensor:
        temperatures = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
        greedy = (temperatures == 0).unsqueeze(-1)
        scaled = scores / torch.where(greedy, 1.0, temperatures.unsqueeze(-1))
        one_hot = torch.full_like(scores, float("-inf"))
        one_hot.scatter_(-1, scores.argmax(dim=-1, keepdim=True), 0.0)
        return torch.where(greedy, one_hot, scaled)  # type: ignore[return-value]


class ParkedWeights:
    """A model's parameters in one pinned host buffer, so waking is one host-to-device copy."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = list(model.parameters())  # shared (tied) parameters appear once
        self.layout: list[tuple[int, int, torch.Size]] = []  # offset, bytes, shape
        offset = 0
        for p in self.params:
            size = p.numel() * p.element_size()
            self.layout.append((offset, size, p.shape))
            offset += -(-size // WEIGHT_ALIGNMENT) * WEIGHT_ALIGNMENT
        # Pinning is slow (seconds for 8 GB): done once per engine, and the buffer kept.
        self.host = torch.empty(offset, dtype=torch.uint8, pin_memory=True)
        self.device = self.params[0].device

    def park(self) -> None:
        for p, (offset, size, _) in zip(self.params, self.layout, strict=True):
            self.host[offset : offset + size].copy_(p.data.reshape(-1).view(torch.uint8))
            p.data = torch.empty(0, dtype=p.dtype, device=self.device)
        torch.cuda.empty_cache()

    def restore(self) -> None:
        on_device = self.host.to(self.device)  # type: ignore[arg-type]
        for p, (offset, size, shape) in zip(self.params, self.layout, strict=True):
            p.data = on_device[offset : offset + size].view(p.dtype).view(shape)


class BuiltinEngine:
    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.served_model_name = config.served_model_name
        self.max_model_len = config.model.max_model_len
        # From the config, not `torch.cuda.is_available()`: asking the driver before a fork would
        # leave forked replicas with a CUDA they cannot use.
        self.device = torch.device("cuda" if config.gpu else "cpu")
        self.metrics = EngineMetrics()
        self._manager: ContinuousBatchingManager | None = None
        self._parked: ParkedWeights | None = None
        self._loaded: Any = None  # the model `load` read, until `start` moves it to its device
        self._asleep = False
        self._wake_lock = asyncio.Lock()
        # CUDA graphs pad KV lengths to multiples of this. transformers' 16384 makes every decode
        # step of a short request attend over 16k padded positions; see BENCHMARKS.md.
        self.kv_padding = KV_PADDING

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the tokenizer and the weights from the model folder into host memory."""
        path = Path(self.config.model_path)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.vocab_size = len(self.tokenizer)
        # float32 on the CPU: as fast as bf16 there without AMX, and no ties from rounding.
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._loaded = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa"
        )

    def start(self) -> None:
        """Move the loaded model to its device (loading it first if `load` did not), then start
        batching."""
        if self._loaded is None:
            self.load()
        model, self._loaded = self._loaded, None
        self.serve_model(model.to(self.device), _eos_ids(model, self.tokenizer))  # type: ignore[union-attr]

    def serve_model(self, model: Any, eos_token_ids: list[int]) -> None:
        """Start batching over a loaded model (benchmarks bring random-weight ones)."""
        limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        if limit is not None and self.max_model_len > limit:
            raise ModelError(
                f"model.max_model_len {self.max_model_len} is beyond what this model supports "
                f"({limit}); lower it in the config"
            )
        self.model, self.eos_token_ids = model, eos_token_ids
        self._manager = self._start_manager()

    def stop(self) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=30)
            self._manager = None

    @property
    def is_sleeping(self) -> bool:
        return self._asleep

    async def sleep(self) -> None:
        """Free the KV cache; on a GPU, also move the weights to pinned host memory."""
        async with self._wake_lock:
            if self._asleep:
                return
            await asyncio.to_thread(self._sleep)
            self._asleep = True

    async def wake_up(self) -> None:
        async with self._wake_lock:
            if not self._asleep:
                return
            await asyncio.to_thread(self._wake)
            self._asleep = False

    def _sleep(self) -> None:
        self.stop()
        if self.device.type == "cuda":
            self._parked = self._parked or ParkedWeights(self.model)
            self._parked.park()

    def _wake(self) -> None:
        if self._parked is not None:
            self._parked.restore()
        # No graph warm-up here: capturing takes seconds, and waking is meant to be fast.
        self._manager = self._start_manager(warm_up=False)

    def _start_manager(self, warm_up: bool = True) -> ContinuousBatchingManager:
        # Sampling is on for the whole batch; each request brings its own temperature (0 for
        # greedy) and top_p. The placeholder values only make transformers create the processors.
        generation = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=True, temperature=0.5, top_p=0.5, top_k=None,
            eos_token_id=self.eos_token_ids or -1, max_new_tokens=self.max_model_len,
        )  # fmt: skip
        manager: ContinuousBatchingManager = self.model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=self._batching_config()
        )
        processors = manager.logit_processor.logits_processor
        for i, processor in enumerate(processors):
            if isinstance(processor, ContinuousBatchingTemperatureLogitsWarper):
                default = TemperatureLogitsWarper(processor.temperature)
                processors[i] = GreedyOrTemperature(default)
        if warm_up and self.device.type == "cuda" and not self.config.service.fast_boot:
            manager.warmup()  # captures the CUDA graphs before the first request
        manager.start()
        return manager

    def _batching_config(self) -> ContinuousBatchingConfig:
        config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            per_request_processors=True,
            auto_switch_to_flash=False,  # flash kernels come from a hub: stay on paged|sdpa
        )
        if self.device.type == "cuda":
            config.max_memory_percent = self.config.model.gpu_memory_utilization
            # transformers turns graphs off for attention that needs a mask (sdpa) by default;
            # without them each decode step pays hundreds of kernel launches.
            config.use_cuda_graph = not self.config.service.fast_boot
            config.kv_padding_interval_size = self.kv_padding
        else:
            config.num_blocks = self._cpu_cache_blocks()
            config.max_batch_tokens = CPU_BATCH_TOKENS
        return config

    def _cpu_cache_blocks(self) -> int:
        """Blocks that VLLM_CPU_KVCACHE_SPACE GiB hold (1 by default), one sequence at least."""
        text = self.model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        bytes_per_token = text.num_hidden_layers * 2 * kv_heads * head_dim * 4
        budget = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")) * 2**30
        return max(
            math.ceil(self.max_model_len / PAGE_SIZE), int(budget // (bytes_per_token * PAGE_SIZE))
        )

    # -- tokens ------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            ids: Any = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - templates raise whatever they like on refusals
            raise PromptError(f"the model's chat template refused these messages: {e}") from None
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Step]:
        await self.wake_up()  # a request wakes a sleeping engine
        manager = self._manager
        assert manager is not None, "engine not started"
        request_id = uuid.uuid4().hex
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        manager.register_result_handler(request_id, outputs.put_nowait)
        manager.add_request(
            prompt_ids, request_id=request_id, max_new_tokens=params.max_tokens, streaming=True,
            temperature=float(params.temperature), top_p=float(params.top_p),
        )  # fmt: skip
        finished, sent = False, 0
        with self.metrics.track(len(prompt_ids)) as timer:
            try:
                while not finished:
                    output = await outputs.get()
                    if output.error:
                        raise EngineError(output.error)
                    tokens, finished = output.generated_tokens, output.is_finished()
                    new, sent = tokens[sent:], len(tokens)
                    timer.tokens(len(new))
                    reason = self._finish_reason(tokens) if finished else None
                    timer.finish_reason = reason
                    yield Step(new, reason)
            finally:
                if not finished:  # the client went away: free its place in the batch
                    manager.cancel_request(request_id)

    def _finish_reason(self, tokens: list[int]) -> Any:
        return "stop" if tokens and tokens[-1] in self.eos_token_ids else "length"

    def metrics_text(self) -> bytes:
        return self.metrics.text()


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])
