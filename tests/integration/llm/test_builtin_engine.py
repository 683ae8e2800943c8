"""The built-in engine against transformers' `generate`: same greedy tokens, alone or batched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ember.llm.config import LLMConfig
from ember.llm.engines.base import SamplingParams

pytestmark = pytest.mark.llm

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about snow.",
    "Count from 1 to 10.",
    "Name three colours.",
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def engine(model_dir: Path):  # type: ignore[no-untyped-def]
    from ember.llm.engines.builtin import BuiltinEngine

    engine = BuiltinEngine(LLMConfig.parse({"model": {"name": str(model_dir)}}, "test"))
    engine.start()
    yield engine
    engine.stop()


def reference_tokens(engine, prompt: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    import torch

    output = engine.model.generate(
        torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False
    )
    return list(output[0, len(prompt) :].tolist())


async def tokens_of(engine, prompt: list[int], params: SamplingParams) -> list[int]:  # type: ignore[no-untyped-def]
    tokens: list[int] = []
    async for step in engine.generate(prompt, params):
        tokens += step.token_ids
    return tokens


def prompt_of(engine, question: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(engine.apply_chat_template([{"role": "user", "content": question}]))


async def test_greedy_alone_and_batched_equals_generate(engine) -> None:  # type: ignore[no-untyped-def]
    prompts = [prompt_of(engine, q) for q in QUESTIONS]
    expected = [reference_tokens(engine, p) for p in prompts]
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)

    assert await tokens_of(engine, prompts[0], greedy) == expected[0]
    # Sampled requests share the batch with greedy ones without disturbing them.
    sampled = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.9)
    batch = await asyncio.gather(
        *(tokens_of(engine, p, greedy) for p in prompts),
        *(tokens_of(engine, p, sampled) for p in prompts[:2]),
    )
    assert batch[: len(prompts)] == expected
    assert "Paris" in engine.decode(batch[0])


async def test_closing_a_stream_cancels_the_request(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = prompt_of(engine, "Tell me a very long story about dragons.")
    steps = engine.generate(prompt, SamplingParams(max_tokens=500, temperature=0.0))
    first = await anext(steps)
    assert first.token_ids
    await steps.aclose()
    # The engine keeps serving, and its metrics saw one cancelled request.
    answer = await tokens_of(engine, prompt_of(engine, "Say hi."), SamplingParams(max_tokens=5))
    assert answer
    assert b'ember_llm_requests_total{finish_reason="cancelled"} 1.0' in engine.metrics_text()


async def test_sleep_frees_the_cache_and_a_request_wakes_it(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = prompt_of(engine, QUESTIONS[0])
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    before = await tokens_of(engine, prompt, greedy)
    await engine.sleep()
    assert engine.is_sleeping
    assert await tokens_of(engine, prompt, greedy) == before
    assert not engine.is_sleeping
