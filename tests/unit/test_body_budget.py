"""The gateway's budget for buffered request bodies: claims grow with the body, and come back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ember.server.gateway.proxy import BodiesOverBudget, BodyBudget, BodyTooLarge, read_body


def receiver(*chunks: bytes) -> Any:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def headers(length: int | None) -> dict[str, Any]:
    return {"headers": [] if length is None else [(b"content-length", b"%d" % length)]}


async def read_in_a_task(budget: BodyBudget, length: int | None, *chunks: bytes) -> bytes:
    """As the server does: one task per request. Returns once the task is over."""
    task = asyncio.ensure_future(read_body(headers(length), receiver(*chunks), 1000, 5, budget))
    try:
        return await task
    finally:
        await asyncio.sleep(0)  # the task's done callbacks run after its awaiter wakes


async def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_budget() -> None:
    budget = BodyBudget(200)
    budget.claim().grow_to(100)  # another request, holding 100 bytes while this test runs
    with pytest.raises(
        BodiesOverBudget, match=r"holding 160 bytes of request bodies, near its limit of 200"
    ):
        await read_in_a_task(budget, None, b"a" * 60, b"b" * 60)
    assert budget.held == 100  # what the refused request had claimed came back


async def test_a_declared_length_is_claimed_before_any_byte_is_read() -> None:
    budget = BodyBudget(100)
    budget.claim().grow_to(50)
    with pytest.raises(BodiesOverBudget):
        await read_in_a_task(budget, 60)  # with no body to read: reading would fail


async def test_the_claim_of_a_finished_request_comes_back() -> None:
    budget = BodyBudget(100)
    assert await read_in_a_task(budget, 80, b"x" * 80) == b"x" * 80
    assert budget.held == 0
    assert await read_in_a_task(budget, None, b"y" * 100) == b"y" * 100


async def test_a_body_larger_than_the_whole_budget_is_too_large_not_a_retry() -> None:
    with pytest.raises(BodyTooLarge, match="exceeds the 100-byte limit"):
        await read_in_a_task(BodyBudget(100), 500, b"x" * 500)
