"""Budgets against metered cost: alerts once at 80 % and 100 %, then no scale-ups (admission
refuses inputs that need a new replica, the autoscaler starts none), running inputs untouched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ember.server.autoscaler.loop import sample
from ember.server.budgets import SERVER, BudgetExceeded, Budgets
from ember.server.errors import ApiError
from ember.server.logs import LogSink
from ember.server.metering.prices import PriceTable
from ember.server.replicas.state import ReplicaState
from ember.server.settings import ServerSettings
from ember.server.store.async_store import AsyncStore
from tests.unit.metering_world import World, close_worlds

S = ReplicaState
PRICES = PriceTable(cpu_core=1.0, memory_gib=0.0)  # a replica with cpu=1 costs 1 USD a second


class Hook:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, payload: dict[str, Any]) -> None:
        self.sent.append(payload)


async def _budgets(world: World, hook: Hook | None = None) -> Budgets:
    store = AsyncStore(world.store)
    budgets = Budgets(store, world.meter, world.pools, LogSink(world.store), hook)  # type: ignore[arg-type]
    await budgets.load()
    return budgets


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    world = World(database_url, prices=PRICES)
    world.store.deploy(world.pool(cpu=1.0).deploy)
    yield world
    close_worlds()


async def test_alerts_go_out_once_at_80_and_100_percent(world: World) -> None:
    hook = Hook()
    budgets = await _budgets(world, hook)
    await budgets.set("app", 100.0)
    replica = world.replica(world.pool(cpu=1.0))
    world.run(replica, starting=0, ready=79)
    await budgets.check()
    assert hook.sent == []
    world.clock.advance(2)
    await budgets.check()
    await budgets.check()
    assert [(a["scope"], a["level"]) for a in hook.sent] == [("app", 80)]
    assert budgets.info("app").state == "warning"
    world.clock.advance(20)
    await budgets.check()
    assert [a["level"] for a in hook.sent] == [80, 100]
    assert budgets.info("app").state == "exceeded"
    held = world.pool(cpu=1.0).starts_held
    assert held is not None and "raise it with `ember budget set app --monthly USD`" in held

    # Another server process on the same store does not send them again.
    again = Hook()
    await (await _budgets(world, again)).check()
    assert again.sent == []


async def test_a_spent_budget_admits_only_what_a_ready_replica_takes_now(world: World) -> None:
    budgets = await _budgets(world)
    pool = world.pool(cpu=1.0)
    busy = world.replica(pool)
    world.run(busy, starting=0, ready=20)
    await budgets.set("app", 10.0)
    assert pool.starts_held is not None and "10.00 USD" in pool.starts_held

    budgets.admit(pool)  # the ready replica has a free slot: admitted
    busy.take_slot()  # ...and now it is busy (max_inputs=1): the next input needs a new one
    with pytest.raises(BudgetExceeded, match="monthly budget of 'app'") as refused:
        budgets.admit(pool)
    assert refused.value.status == 402
    settings = ServerSettings(home=Path("/nonexistent"), replica_base_env={})
    context = sample(pool, settings, world.clock(), one_per_port=False)
    assert not context.can_start  # the autoscaler starts nothing for it
    busy.free_slot(world.clock())  # the running input finishes as usual


async def test_inputs_waiting_with_no_replica_fail_once_the_budget_is_spent(world: World) -> None:
    budgets = await _budgets(world)
    pool, other = world.pool(cpu=1.0), world.pool("g", cpu=1.0)
    world.run(world.replica(other), starting=0, ready=30)  # g spent the app's money
    waiting = asyncio.ensure_future(pool.queue.acquire(60))
    await asyncio.sleep(0)
    await budgets.set("app", 10.0)
    with pytest.raises(BudgetExceeded):
        await waiting


async def test_the_server_budget_counts_every_app(world: World) -> None:
    world.store.deploy(world.pool("h", app="other", cpu=1.0).deploy)
    budgets = await _budgets(world)
    world.run(world.replica(world.pool(cpu=1.0)), starting=0, ready=6)
    world.run(world.replica(world.pool("h", app="other", cpu=1.0)), starting=0, ready=6)
    await budgets.set(SERVER, 15.0)
    assert budgets.info(SERVER).spent_usd == pytest.approx(18.0)
    assert all(pool.starts_held and "the server's monthly budget" in pool.starts_held
               for pool in world.pools)  # fmt: skip
    await budgets.remove(SERVER)
    assert all(pool.starts_held is None for pool in world.pools)


@pytest.mark.parametrize("amount", [-1.0, 0.0, float("nan"), float("inf")])
async def test_a_bad_budget_is_refused(world: World, amount: float) -> None:
    with pytest.raises(ApiError, match="positive number of USD"):
        await (await _budgets(world)).set("app", amount)


async def test_a_budget_for_an_unknown_app_is_refused(world: World) -> None:
    with pytest.raises(ApiError, match="no app 'nope'; see `ember app list`"):
        await (await _budgets(world)).set("nope", 5.0)
