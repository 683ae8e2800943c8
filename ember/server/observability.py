"""Observability: the meter, budgets, metrics, their history and the store's retention (logs,
calls), built, run and stopped together.

Each is a lifecycle subscriber or a loop of its own; the control plane holds this one object.
A server without metering (`settings.metering`, for benchmarks) builds them all, so every reader
works, but subscribes and starts none of them but retention, and records nothing per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ember.http1 import Http1Pool
from ember.server.budgets import Budgets
from ember.server.deployments import Deployments
from ember.server.errors import ApiError
from ember.server.history import History
from ember.server.logs import LogSink
from ember.server.metering.meter import Meter
from ember.server.metrics import ServerMetrics, Unrecorded
from ember.server.pools import PoolRegistry
from ember.server.replica_metrics import ReplicaMetrics
from ember.server.replicas.state import Lifecycle
from ember.server.retention import Retention
from ember.server.settings import NO_METERING_ENV, ServerSettings
from ember.server.store.async_store import AsyncStore
from ember.server.webhook import Webhook


class MeteringOff(ApiError):
    """409: usage and budgets asked of a server that runs without metering."""

    def __init__(self) -> None:
        super().__init__(
            409,
            "InvalidError",
            f"this server runs without metering ({NO_METERING_ENV}=1, a setting for "
            "benchmarks): it records no usage and enforces no budget; restart `ember server` "
            f"without {NO_METERING_ENV} to use `ember usage` and `ember budget`",
        )


class Observability:
    def __init__(
        self,
        settings: ServerSettings,
        store: AsyncStore,
        pools: PoolRegistry,
        deployments: Deployments,
        lifecycle: Lifecycle,
        logs: LogSink,
        http: Http1Pool,
        gpu_types: Mapping[int, str],
    ) -> None:
        self._settings = settings
        # The meter writes and logs are trimmed from threads of their own: the store as it is.
        sync = store.sync
        self.meter = Meter(sync, settings.prices, gpu_types, pools.resources_of, lifecycle.clock)
        url = settings.budget_webhook
        self.webhook = Webhook(url) if url else None
        self.budgets = Budgets(store, self.meter, pools, logs, self.webhook)
        self.replica_metrics = ReplicaMetrics(pools, http)
        metrics = ServerMetrics if settings.metering else Unrecorded
        self.metrics = metrics(
            pools, deployments, self.meter, self.replica_metrics, self.budgets.all
        )
        days = settings.call_retention_days
        self.retention = Retention(sync, settings.log_retention_bytes, days * 86400)
        self.history = History(self.metrics)
        if settings.metering:
            for part in (self.meter, self.replica_metrics, self.metrics):
                lifecycle.subscribe(part.on_replica_event)

    def require_metering(self) -> None:
        """MeteringOff unless this server meters: usage and budgets need it."""
        if not self._settings.metering:
            raise MeteringOff()

    async def start(self) -> list[asyncio.Task[None]]:
        """Recover what a previous server left, then the loops."""
        await asyncio.to_thread(self.meter.recover)
        settings = self._settings
        loops = [self.retention.run()]
        if settings.metering:
            await self.budgets.load()
            loops += [
                self.meter.run(settings.meter_interval, self.budgets.check),
                self.replica_metrics.run(settings.metrics_interval),
                self.history.run(settings.metrics_interval, self.meter.now),
            ]
        return [asyncio.ensure_future(loop) for loop in loops]

    async def stop(self) -> None:
        """After every replica stopped: the last usage written, alerts in flight dropped."""
        await self.meter.close()
        if self.webhook is not None:
            await self.webhook.close()
