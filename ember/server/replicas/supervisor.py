"""Supervisor: runs each replica through its lifecycle, from pending to stopped.

`add` creates a replica PENDING; `place` gives pending replicas their GPUs and cores (a pure
decision, placement.py) and starts them, forked from the pool's template when it has one (the
forked tier), else fresh; each started replica is watched by one task: launched through the
Backend, READY when it reports so, STOPPED when its process is gone, whatever the reason. `park`
and `restore` move an idle replica out of its GPU and back (the parked tier). `drain` and `kill`
stop replicas; `check_health` replaces ones that stop answering.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Coroutine, Iterable
from typing import Any

from ember.backends.base import Backend, CheckpointError, ReplicaHandle, ReplicaStartFailed
from ember.http1 import Http1Pool, HttpError
from ember.runtime.mounts import replica_dir
from ember.server.logs import LogSink
from ember.server.pools import Pool
from ember.server.replicas.launch import Launcher
from ember.server.replicas.placement import Claim, Inventory, Placement, place
from ember.server.replicas.state import (
    Lifecycle,
    ReplicaEvent,
    ReplicaRecord,
    ReplicaState,
)
from ember.server.replicas.templates import Templates
from ember.server.scheduling.queue import ReplicaStartupError
from ember.server.settings import ServerSettings

log = logging.getLogger("ember.replicas")
S = ReplicaState


class HookFailed(Exception):
    """A replica's `@before_park` or `@after_restore` hook raised."""


HEALTH_PATH = "/__ember/health"
HEALTH_TIMEOUT = 5.0
HEALTH_FAILURES = 3  # in a row, each on a fresh connection, before a replica is replaced
KILL_GRACE = 2.0


class Supervisor:
    def __init__(
        self,
        settings: ServerSettings,
        backend: Backend,
        lifecycle: Lifecycle,
        inventory: Inventory,
        launcher: Launcher,
        logs: LogSink,
        http: Http1Pool,
        templates: Templates,
    ) -> None:
        self._settings, self._backend, self._lifecycle = settings, backend, lifecycle
        self._inventory, self._launcher, self._logs, self._http = inventory, launcher, logs, http
        self._templates, self._capabilities = templates, backend.capabilities()
        self._tasks: set[asyncio.Task[None]] = set()
        self.restore_failures = 0
        lifecycle.subscribe(self._on_event)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: ReplicaEvent) -> None:
        if event.state is S.STOPPED:
            self._inventory.release(event.replica.id)
            log.info("%s", describe_stop(event))

    # -- starting ----------------------------------------------------------------------------

    def add(self, pool: Pool) -> ReplicaRecord:
        """A new replica of `pool`, PENDING until `place` gives it what it asks for."""
        replica = self._lifecycle.create(pool.new_replica_id(), pool.key)
        waiting_since = pool.queue.waiting_since()
        if waiting_since is not None:
            replica.phases["queued"] = max(0.0, replica.created - waiting_since)
        pool.replicas[replica.id] = replica
        return replica

    def place(self, pools: Iterable[Pool]) -> None:
        """Start every pending replica whose GPUs are free; the rest wait for the next call."""
        pending: dict[str, tuple[Pool, ReplicaRecord]] = {}
        claims = []
        for pool in pools:
            urgent = pool.queue.waiting > 0 and not any(
                r.state in (S.STARTING, S.READY) for r in pool.replicas.values()
            )
            for replica in pool.replicas.values():
                if replica.state is S.PENDING:
                    pending[replica.id] = (pool, replica)
                    resources = pool.resources
                    claims.append(
                        Claim(replica.id, resources.gpu, resources.cpu, urgent, replica.created)
                    )
        placements = place(claims, self._inventory.free_gpus(), self._inventory.core_load())
        for replica_id, placement in placements.items():
            pool, replica = pending[replica_id]
            replica.gpus, replica.cpus = placement.gpus, placement.cpus
            self._inventory.lease(replica.id, placement)
            event = self._lifecycle.move(replica, S.STARTING)
            replica.phases["placement"] = event.duration
            self._spawn(self._run(pool, replica))

    async def _run(self, pool: Pool, replica: ReplicaRecord) -> None:
        """The replica's whole life after placement; always ends with it STOPPED."""
        try:
            replica.handle = handle = await self._launch(pool, replica)
        except Exception as exc:
            log.warning("starting replica %s failed", replica.id, exc_info=True)
            self._start_failed(pool, replica, f"could not start the replica: {exc}")
            return
        replica.exited = asyncio.ensure_future(handle.wait())
        failure = await self._until_ready(pool, replica)
        if replica.state is not S.STARTING:  # told to stop meanwhile: not a failed start
            failure = None
            if replica.state is S.STOPPING and not replica.exited.done():
                await self._backend.stop_replica(handle, KILL_GRACE)  # stopped while spawned
        elif failure is None:
            pool.startup_failures = 0
            self._lifecycle.move(replica, S.READY, f"{replica.tier} start")
        else:
            self._lifecycle.move(replica, S.STOPPING, failure)
            await self._backend.stop_replica(handle, KILL_GRACE)
        code = await replica.exited
        self._finished(pool, replica, code, failure)

    async def _launch(self, pool: Pool, replica: ReplicaRecord) -> ReplicaHandle:
        """Fork the replica from the pool's template if it has one (else, or if that fails,
        start it fresh), timing how long that took."""
        launch = await self._launcher.launch(pool, replica)
        template = await self._templates.get(pool)
        start = self._lifecycle.clock()
        if template is not None:
            try:
                handle = await self._backend.fork_replica(template, launch)
            except ReplicaStartFailed as exc:
                self._note(pool, replica, f"could not fork from the template ({exc}); fresh start")
            else:
                replica.tier, replica.phases["fork"] = "fork", self._lifecycle.clock() - start
                return handle
        handle = await self._backend.start_replica(launch)
        replica.tier, replica.phases["process start"] = "fresh", self._lifecycle.clock() - start
        return handle

    async def _until_ready(self, pool: Pool, replica: ReplicaRecord) -> str | None:
        """None once ready (or told to stop meanwhile), else why it did not start."""
        assert replica.handle is not None
        web = pool.spec.web  # a web_server may ask for longer (vLLM takes minutes on a CPU)
        timeout = max(self._settings.replica_startup_timeout, web.startup_timeout if web else 0)
        try:
            status = await asyncio.wait_for(replica.handle.wait_ready(), timeout)
        except ReplicaStartFailed as exc:
            return str(exc)
        except TimeoutError:
            return f"not ready within {timeout:g} s"
        replica.phases.update(status.phases)
        return None

    def _finished(self, pool: Pool, replica: ReplicaRecord, code: int, failure: str | None) -> None:
        if failure is not None:
            self._start_failed(pool, replica, failure)
        elif replica.state is not S.STOPPED:
            if replica.state is not S.STOPPING:
                self._note(pool, replica, f"replica exited unexpectedly with code {code}")
            self._lifecycle.move(replica, S.STOPPED, f"exited with code {code}")
        self._logs.forget(replica.id)
        if pool.spec.volumes:  # its working copies, if it could not remove them itself
            folder = replica_dir(self._settings.volumes_dir, replica.id)
            self._spawn(asyncio.to_thread(shutil.rmtree, folder, True))

    def _start_failed(self, pool: Pool, replica: ReplicaRecord, reason: str) -> None:
        """Fail the inputs waiting for this pool, with the replica's last output; back off."""
        pool.startup_failures += 1
        backoff = min(30.0, 0.5 * 2**pool.startup_failures)
        pool.next_start_at = self._lifecycle.clock() + backoff
        tail = self._logs.tail(replica.id)
        pool.last_failure = f"{reason}. Last output:\n{tail}" if tail else reason
        self._note(pool, replica, reason)
        self._lifecycle.move(replica, S.STOPPED, f"failed to start: {reason}")
        pool.queue.fail_waiters(
            ReplicaStartupError(
                f"{pool.key.function} could not start a replica: {pool.last_failure}"
            )
        )

    def _note(self, pool: Pool, replica: ReplicaRecord, text: str) -> None:
        self._logs.write(pool.key.app, pool.key.function, replica.id, f"[ember] {text}")

    # -- stopping ----------------------------------------------------------------------------

    def drain(self, replica: ReplicaRecord, reason: str) -> None:
        """Scale down: take no new inputs, finish the ones in flight, run exit hooks, stop."""
        if replica.state is S.PENDING:
            self._lifecycle.move(replica, S.STOPPED, reason)
        elif replica.state is S.STARTING:
            self._lifecycle.move(replica, S.STOPPING, reason)
            self._spawn(self._terminate(replica, KILL_GRACE))
        elif replica.state is S.READY:
            self._lifecycle.move(replica, S.DRAINING, reason)
            self._spawn(self._drain(replica))

    async def _drain(self, replica: ReplicaRecord) -> None:
        await replica.idle.wait()
        if replica.state is S.DRAINING:  # not dead meanwhile
            self._lifecycle.move(replica, S.STOPPING, "drained")
            await self._terminate(replica, self._settings.replica_graceful_shutdown)

    def kill(self, replica: ReplicaRecord, reason: str) -> None:
        """Stop a replica that is stuck or broken, without waiting for its inputs."""
        if replica.state in (S.STARTING, S.READY, S.DRAINING, S.PARKING, S.PARKED, S.RESTORING):
            self._lifecycle.move(replica, S.STOPPING, reason)
            self._spawn(self._terminate(replica, KILL_GRACE))

    # -- parking -----------------------------------------------------------------------------

    def park(self, replica: ReplicaRecord, reason: str) -> None:
        """Instead of stopping an idle replica: its `@before_park` hooks give back GPU memory,
        then the driver checkpoints what is left, so it holds no GPU until it is restored."""
        if replica.state is S.READY and replica.in_flight == 0:
            self._lifecycle.move(replica, S.PARKING, reason)
            self._spawn(self._park(replica))

    async def _park(self, replica: ReplicaRecord) -> None:
        assert replica.handle is not None
        start = self._lifecycle.clock()
        try:
            await self._hooks(replica, "park")
            replica.checkpointed = await self._backend.park(replica.handle)
        except (HttpError, HookFailed, CheckpointError, TimeoutError) as exc:
            if replica.state is S.PARKING:
                self.kill(replica, f"could not park: {exc}")
            return
        if replica.state is not S.PARKING:
            return  # stopped meanwhile
        replica.parked_bytes = self._backend.memory_bytes(replica.handle)
        if replica.checkpointed:
            self._inventory.release(replica.id)  # its GPU is free for others
        how = "GPU state checkpointed" if replica.checkpointed else "asleep, CUDA context kept"
        self._lifecycle.move(replica, S.PARKED, f"{how} in {self._lifecycle.clock() - start:.2f} s")

    def restore(self, replica: ReplicaRecord) -> bool:
        """Bring a parked replica back (the fastest tier); False if its GPUs are taken."""
        if replica.state is not S.PARKED:
            return False
        if replica.checkpointed:
            if not self._inventory.all_free(replica.gpus):
                return False
            self._inventory.lease(replica.id, Placement(replica.gpus, replica.cpus))
        replica.phases = {}
        self._lifecycle.move(replica, S.RESTORING)
        self._spawn(self._restore(replica))
        return True

    async def _restore(self, replica: ReplicaRecord) -> None:
        assert replica.handle is not None
        clock = self._lifecycle.clock
        try:
            if replica.checkpointed:
                start = clock()
                await self._backend.restore(replica.handle)
                replica.phases["restore"] = clock() - start
            start = clock()
            await self._hooks(replica, "restore")
            replica.phases["wake"] = clock() - start
        except (HttpError, HookFailed, CheckpointError, TimeoutError) as exc:
            self.restore_failures += 1
            log.warning("restoring replica %s failed (%s); the next tier serves", replica.id, exc)
            if replica.state is S.RESTORING:
                self.kill(replica, f"could not restore: {exc}")
            return
        if replica.state is S.RESTORING:
            replica.tier = "restore"
            self._lifecycle.move(replica, S.READY, "restored")

    async def _hooks(self, replica: ReplicaRecord, which: str) -> None:
        """Run the replica's `@before_park` ("park") or `@after_restore` ("restore") hooks."""
        assert replica.handle is not None
        handle = replica.handle
        async with asyncio.timeout(self._settings.park_hook_timeout):
            response = await self._http.request(
                "POST", handle.host, handle.port, f"/__ember/{which}", fresh=True
            )
            text = (await response.read()).decode(errors="replace")
        if response.status != 200:
            raise HookFailed(f"the {which} hooks failed: {text}")

    def expire_parked(self, pools: Iterable[Pool]) -> None:
        """Stop parked replicas past the bounds: oldest first, beyond the count or the host
        memory they may hold, and any parked longer than `park_for`."""
        parked = sorted(
            (r for pool in pools for r in pool.replicas.values() if r.state is S.PARKED),
            key=lambda r: r.since,
        )
        now, settings = self._lifecycle.clock(), self._settings
        held = sum(r.parked_bytes for r in parked)
        excess = len(parked) - settings.max_parked
        budget = settings.parked_memory_fraction * self._capabilities.memory_bytes
        for replica in parked:
            if excess > 0 or held > budget or now - replica.since > settings.park_for:
                self.kill(replica, "parked beyond the bounds (--park-for, --max-parked, memory)")
                excess, held = excess - 1, held - replica.parked_bytes

    async def _terminate(self, replica: ReplicaRecord, grace: float) -> None:
        if replica.handle is not None:  # else `_run` stops it once the spawn returns
            await self._backend.stop_replica(replica.handle, grace)

    # -- health ------------------------------------------------------------------------------

    async def check_health(self, pool: Pool) -> None:
        """Replace idle ready replicas that failed several health checks in a row."""
        idle = [r for r in pool.replicas.values() if r.ready and r.in_flight == 0]
        results = await asyncio.gather(*(self._healthy(r) for r in idle))
        for replica, ok in zip(idle, results, strict=True):
            if replica.in_flight:  # took an input during the probe: busy, which is not dead
                continue
            replica.health_failures = 0 if ok else replica.health_failures + 1
            if replica.health_failures >= HEALTH_FAILURES and replica.ready:
                failures = replica.health_failures
                self._note(pool, replica, f"health check failed {failures} times; replacing it")
                self.kill(replica, f"health check failed {failures} times in a row")

    async def _healthy(self, replica: ReplicaRecord) -> bool:
        assert replica.handle is not None
        handle = replica.handle
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                response = await self._http.request(
                    "GET", handle.host, handle.port, HEALTH_PATH, fresh=True
                )
                await response.read()
        except (HttpError, TimeoutError):
            return False
        return response.status == 200

    def forget(self, pool: Pool) -> None:
        """A pool that is gone: its template goes too."""
        self._spawn(self._templates.retire(pool.key))

    async def close(self) -> None:
        self._templates.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._backend.close()


def describe_stop(event: ReplicaEvent) -> str:
    """A server log line for a stop, with how long the replica lived and why it stopped."""
    replica = event.replica
    app, version, function, _ = replica.pool
    lifetime = event.at - replica.created
    return (
        f"replica {replica.id} of {app}.{function} (v{version}) stopped after {lifetime:.2f} s "
        f"({event.reason or 'no reason given'})"
    )
