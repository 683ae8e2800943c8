"""Budgets: a monthly cap in USD per app, and one for the whole server, against metered cost.

Checked after every meter checkpoint. At 80 % of a budget, a warning goes to the server log, the
app's log and the optional webhook; at 100 %, the same, and the app (every app, for the server's
budget) stops scaling up, until the budget is raised or the UTC month ends. Each alert goes out
once per budget and month, restarts included.

What "stops scaling up" means, exactly:
- an input (a web request, `.remote()`, `.map`, `.spawn`) that a ready replica can take at once
  is admitted; one that would wait for a replica is refused with 402, naming the budget and the
  command that raises it;
- the autoscaler starts no replica for the app (`Pool.starts_held`); inputs already waiting
  are served by the replicas it has, and fail with the same 402 if it has none;
- running inputs finish; replicas scale down as usual, and `min_containers` keeps its replicas
  (stop the app to stop paying for them). `max_containers` stays the hard ceiling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from ember import wire
from ember.server.errors import ApiError
from ember.server.logs import LogSink
from ember.server.metering.meter import Meter
from ember.server.metering.windows import month_name
from ember.server.pools import Pool, PoolRegistry
from ember.server.replicas.state import ReplicaState
from ember.server.scheduling.router import pick_replica
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import Store
from ember.server.webhook import Webhook

log = logging.getLogger("ember.budgets")

SERVER = "*"  # the scope of the server-wide budget
WARN_AT = 0.8
REFUSALS_LOGGED_EVERY = 60.0  # seconds: refusals past the first are logged as a count
SERVING = frozenset({ReplicaState.STARTING, ReplicaState.READY})


class BudgetExceeded(ApiError):
    """402: the app's (or the server's) monthly budget is spent, and this input needs a new
    replica."""

    def __init__(self, message: str) -> None:
        super().__init__(402, "BudgetExceededError", message)


def check_amount(monthly_usd: float) -> float:
    if not math.isfinite(monthly_usd) or monthly_usd <= 0:
        raise ApiError(
            400,
            "InvalidError",
            f"a monthly budget must be a positive number of USD, got {monthly_usd!r}; to remove "
            "one, use `ember budget remove`",
        )
    return monthly_usd


def raise_command(scope: str) -> str:
    target = "--server" if scope == SERVER else scope
    return f"`ember budget set {target} --monthly USD`"


def describe(scope: str) -> str:
    return "the server's monthly budget" if scope == SERVER else f"the monthly budget of {scope!r}"


def usd(amount: float) -> str:
    """Dollars as people read them; small amounts keep their cents' fractions."""
    return f"{amount:.2f} USD" if amount >= 0.1 or amount == 0 else f"{amount:.6f} USD"


class Budgets:
    def __init__(
        self,
        store: AsyncStore,
        meter: Meter,
        pools: PoolRegistry,
        logs: LogSink,
        webhook: Webhook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._meter, self._pools, self._logs = store, meter, pools, logs
        self._webhook, self._clock = webhook, clock
        self._limits: dict[str, float] = {}
        self._spent: dict[str, float] = {}  # by scope, this month, at the last check
        self._over: dict[str, str] = {}  # scope -> why its scale-ups are refused
        self._refusals: dict[str, int] = {}  # by app, not logged yet
        self._refusals_logged: dict[str, float] = {}
        self._checking = asyncio.Lock()  # one check at a time: its alerts go out in order

    async def load(self) -> None:
        self._limits = await self._store.run(Store.budgets)
        await self.check()

    # -- the hot path ------------------------------------------------------------------------

    def admit(self, pool: Pool) -> None:
        """BudgetExceeded unless the pool's budgets allow a scale-up, or a replica can take
        the input at once."""
        if not self._over:
            return
        reason = self._over.get(pool.key.app) or self._over.get(SERVER)
        if reason is None:
            return
        if not pool.queue.waiting and pick_replica(pool.replicas.values(), pool.spec.max_inputs):
            return
        self._refused(pool.key.app)
        raise BudgetExceeded(reason)

    def _refused(self, app: str) -> None:
        self._refusals[app] = self._refusals.get(app, 0) + 1
        if self._clock() - self._refusals_logged.get(app, -math.inf) >= REFUSALS_LOGGED_EVERY:
            self._log_refusals(app)

    def _log_refusals(self, app: str) -> None:
        count = self._refusals.pop(app, 0)
        self._refusals_logged[app] = self._clock()
        if count:
            reason = self._over.get(app) or self._over.get(SERVER, "")
            text = f"budget: refused {count} input(s) of app {app!r} that needed a new replica"
            log.warning("%s; %s", text, reason)
            self._logs.write(app, "-", "-", f"[ember] {text}: {reason}")

    # -- managing ----------------------------------------------------------------------------

    async def set(self, scope: str, monthly_usd: float) -> wire.BudgetInfo:
        if scope != SERVER and await self._store.run(Store.get_app, scope) is None:
            raise ApiError(404, "NotFoundError", f"no app {scope!r}; see `ember app list`")
        await self._store.run(Store.set_budget, scope, check_amount(monthly_usd))
        self._limits[scope] = monthly_usd
        log.info("%s set to %s", describe(scope), usd(monthly_usd))
        await self.check()
        return self.info(scope)

    async def remove(self, scope: str) -> None:
        if not await self._store.run(Store.delete_budget, scope):
            raise ApiError(
                404, "NotFoundError", f"no budget for {scope!r}; see `ember budget list`"
            )
        self._limits.pop(scope, None)
        await self.check()

    def info(self, scope: str) -> wire.BudgetInfo:
        limit, spent = self._limits[scope], self._spent.get(scope, 0.0)
        info = wire.BudgetInfo(scope=scope, monthly_usd=limit, spent_usd=spent)
        if spent >= WARN_AT * limit:
            info.state = "exceeded" if spent >= limit else "warning"
        return info

    def all(self) -> list[wire.BudgetInfo]:
        return [self.info(scope) for scope in sorted(self._limits)]

    # -- checking ----------------------------------------------------------------------------

    async def check(self) -> None:
        """After each meter checkpoint: compare this month's costs with the budgets; scale-ups
        are held at once, then the alerts due go out."""
        async with self._checking:
            await self._check()

    async def _check(self) -> None:
        _, month = self._meter.costs()
        total = sum(month.values())
        self._spent = {s: total if s == SERVER else month.get(s, 0.0) for s in self._limits}
        over: dict[str, str] = {}
        due: list[tuple[str, int, float, float]] = []  # (scope, level, spent, limit)
        for scope, limit in self._limits.items():
            spent = self._spent[scope]
            if spent >= WARN_AT * limit:
                due.append((scope, 80, spent, limit))
            if spent >= limit:
                due.append((scope, 100, spent, limit))
                over[scope] = (
                    f"{describe(scope)}, {usd(limit)}, is spent ({usd(spent)} this UTC month): "
                    "inputs that need a new replica are refused; raise it with "
                    f"{raise_command(scope)}"
                )
        self._over = over
        for pool in self._pools:
            self._hold(pool, over.get(pool.key.app) or over.get(SERVER))
        for app in list(self._refusals):
            self._log_refusals(app)
        for alert in due:
            await self._alert(*alert)

    def _hold(self, pool: Pool, reason: str | None) -> None:
        pool.starts_held = reason
        serving = any(r.state in SERVING for r in pool.replicas.values())
        if reason is not None and pool.queue.waiting and not serving:
            pool.queue.fail_waiters(BudgetExceeded(reason))

    async def _alert(self, scope: str, level: int, spent: float, limit: float) -> None:
        month = month_name(self._meter.now())
        if not await self._store.run(Store.claim_alert, scope, month, level):
            return
        what = "reached" if level == 100 else f"at {level} %"
        text = f"{describe(scope)} is {what}: {usd(spent)} of {usd(limit)} spent in {month}"
        if level == 100:
            text += "; new replicas are not started until it is raised"
        log.warning("%s", text)
        if scope != SERVER:
            self._logs.write(scope, "-", "-", f"[ember] {text}")
        if self._webhook is not None:
            self._webhook.send(
                {"event": "budget", "scope": scope, "level": level, "month": month,
                 "spent_usd": round(spent, 6), "monthly_usd": limit, "message": text}
            )  # fmt: skip
