"""The built-in engine in its own process, against transformers' `generate`: the same greedy tokens
alone, batched and after preemption; cancellation; sleep; the engine process dying."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ember.llm.config import LLMConfig
from ember.llm.engines.base import EngineDeadError, SamplingParams
from ember.llm.engines.builtin.client import BuiltinEngine
from tests.conftest import alive, wait_until

pytestmark = pytest.mark.llm

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about snow.",
    "Count from 1 to 10.",
    "Name three colours.",
]
MAX_TOKENS = 24
GREEDY = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)


def start_engine(model_dir: Path, **model: Any) -> BuiltinEngine:
    config = LLMConfig.parse({"model": {"name": str(model_dir), **model}}, "test")
    engine = BuiltinEngine(config)
    engine.start()
    return engine


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[BuiltinEngine]:
    engine = start_engine(model_dir)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    """transformers' own model in this process, for `generate`."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def generated(model: Any, prompt: list[int], max_tokens: int = MAX_TOKENS) -> list[int]:
    import torch

    output = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False)
    return list(output[0, len(prompt) :].tolist())


async def tokens_of(engine: BuiltinEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    tokens: list[int] = []
    async for step in engine.generate(prompt, params):
        tokens += step.token_ids
    return tokens


def prompt_of(engine: BuiltinEngine, question: str) -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": question}])


def metric(engine: BuiltinEngine, name: str) -> float:
    line = next(li for li in engine.metrics_text().decode().splitlines() if li.startswith(name))
    return float(line.split()[-1])


async def test_greedy_alone_and_batched_equals_generate(
    engine: BuiltinEngine, reference: Any
) -> None:
    prompts = [prompt_of(engine, q) for q in QUESTIONS]
    expected = [generated(reference, p) for p in prompts]

    assert await tokens_of(engine, prompts[0], GREEDY) == expected[0]
    # Sampled requests share the batch with greedy ones without disturbing them.
    sampled = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.9)
    batch = await asyncio.gather(
        *(tokens_of(engine, p, GREEDY) for p in prompts),
        *(tokens_of(engine, p, sampled) for p in prompts[:2]),
    )
    assert batch[: len(prompts)] == expected
    assert "Paris" in engine.decode(batch[0])


async def test_closing_a_stream_frees_its_place_in_the_batch(engine: BuiltinEngine) -> None:
    prompt = prompt_of(engine, "Tell me a very long story about dragons.")
    steps = engine.generate(prompt, SamplingParams(max_tokens=500, temperature=0.0))
    first = await anext(steps)
    assert first.token_ids
    assert metric(engine, "ember_llm_engine_running") == 1
    await steps.aclose()
    # The engine itself reports the request gone, long before its 500 tokens.
    wait_until(lambda: metric(engine, "ember_llm_engine_running") == 0)
    answer = await tokens_of(engine, prompt_of(engine, "Say hi."), SamplingParams(max_tokens=5))
    assert answer
    assert b'ember_llm_requests_total{finish_reason="cancelled"} 1.0' in engine.metrics_text()


async def test_a_slow_reader_holds_nobody_up_and_gets_its_tokens_in_one_piece(
    engine: BuiltinEngine, reference: Any
) -> None:
    slow_prompt, fast_prompt = (prompt_of(engine, q) for q in QUESTIONS[2:])
    slow = engine.generate(slow_prompt, GREEDY)
    steps = [await anext(slow)]
    assert await tokens_of(engine, fast_prompt, GREEDY) == generated(reference, fast_prompt)
    steps += [step async for step in slow]  # decoded meanwhile, waiting for its reader
    assert [t for step in steps for t in step.token_ids] == generated(reference, slow_prompt)
    assert len(steps) < 4  # what piled up came as one step, not one per token


async def test_sleep_frees_the_cache_and_a_request_wakes_it(engine: BuiltinEngine) -> None:
    prompt = prompt_of(engine, QUESTIONS[0])
    before = await tokens_of(engine, prompt, GREEDY)
    await engine.sleep()
    assert engine.is_sleeping
    assert await tokens_of(engine, prompt, GREEDY) == before
    assert not engine.is_sleeping


async def test_requests_preempted_by_a_full_cache_still_equal_generate(
    model_dir: Path, reference: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five 64-token pages of 2.8 MiB (one is scratch): room for 256 tokens, and 4 x 100 are asked.
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", str(5 * 2_949_120 / 2**30))
    engine = start_engine(model_dir, max_model_len=256)
    try:
        prompts = [prompt_of(engine, q) for q in QUESTIONS]
        params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
        got = await asyncio.gather(*(tokens_of(engine, p, params) for p in prompts))
        assert metric(engine, "ember_llm_preemptions") > 0
    finally:
        engine.stop()
    for prompt, tokens in zip(prompts, got, strict=True):
        expected = generated(reference, prompt, 60)
        assert tokens[: len(expected)] == expected  # generate stops at end-of-sequence


async def test_an_engine_process_that_dies_fails_its_requests(model_dir: Path) -> None:
    deaths: list[str] = []
    engine = BuiltinEngine(
        LLMConfig.parse({"model": {"name": str(model_dir)}}, "test"), on_death=deaths.append
    )
    engine.start()
    [pid] = engine.pids()
    try:
        steps = engine.generate(prompt_of(engine, "Tell me a long story."), SamplingParams(500))
        await anext(steps)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineDeadError, match="exit code -9"):
            async for _ in steps:
                pass
        wait_until(lambda: deaths)  # told after the streams failed, from the reader thread
        assert "exit code -9" in deaths[0]
        with pytest.raises(EngineDeadError):  # new requests fail at once
            await anext(engine.generate([1, 2, 3], SamplingParams(5)))
        assert not alive(pid)
    finally:
        engine.stop()
