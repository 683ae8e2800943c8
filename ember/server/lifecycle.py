"""ReplicaManager: start a replica, wait until it is healthy, watch it, drain and stop it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ember import wire
from ember.backends.base import Backend, ReplicaLaunch
from ember.http1 import Http1Pool, HttpError
from ember.runtime.images import BuiltImage
from ember.runtime.mounts import replica_dir
from ember.server.logs import LogSink
from ember.server.pools import Pool, Replica, ReplicaState
from ember.server.settings import ServerSettings

log = logging.getLogger("ember.server")

HEALTH_PATH = "/__ember/health"


class ReplicaStartupError(Exception):
    """Every waiting input of a pool fails with this when a replica cannot start."""


class ReplicaManager:
    def __init__(
        self,
        settings: ServerSettings,
        backend: Backend,
        logs: LogSink,
        http: Http1Pool,
        replica_token: Callable[[str], str],  # app -> the token its replicas call the API with
        secret_env: Callable[[wire.FunctionSpec], dict[str, str]],
        image: Callable[[wire.FunctionSpec], BuiltImage | None],
    ) -> None:
        self._secret_env, self._image = secret_env, image
        self._settings, self._backend, self._logs = settings, backend, logs
        self._http, self._replica_token = http, replica_token
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, pool: Pool) -> Replica:
        """Launch a replica in the background; it joins the pool as STARTING at once."""
        replica = Replica(id=pool.new_replica_id(), handle=None)
        pool.replicas[replica.id] = replica
        self._spawn(self._run(pool, replica))
        return replica

    async def _run(self, pool: Pool, replica: Replica) -> None:
        key = pool.key
        settings = wire.ReplicaSettings(
            replica_id=replica.id,
            app_name=key.app,
            version=key.version,
            declared_name=pool.deploy.declared_name,
            module=pool.deploy.module,
            source_dir=str(pool.source_dir) if pool.source_dir else None,
            function=pool.spec,
            params=key.params,
            listen_fd=-1,
            server_url=self._settings.url,
            token=self._replica_token(key.app),
            graceful_shutdown=self._settings.replica_graceful_shutdown,
            ca_cert=str(self._settings.tls_cert) if self._settings.tls_cert else None,
            volume_root=str(self._settings.volumes_dir),
        )
        on_log = lambda text: self._logs.write(key.app, key.function, replica.id, text)  # noqa: E731
        try:
            secrets = self._secret_env(pool.spec)
            self._logs.redact(key.app, secrets.values())
            launch = ReplicaLaunch(settings, on_log, secrets)
            image = self._image(pool.spec)
            if image is not None:
                launch.env = {**image.env, **secrets}
                launch.python, launch.cwd = str(image.python), str(image.workdir)
            replica.handle = await self._backend.start_replica(launch)
        except Exception as exc:  # noqa: BLE001 - a failed spawn is a failed start
            self._startup_failed(pool, replica, f"could not start replica process: {exc}")
            return
        exit_code = asyncio.ensure_future(replica.handle.wait())
        try:
            became_ready = await self._wait_ready(pool, replica, exit_code)
        except Exception:  # a broken probe must not leave a zombie replica
            log.exception("waiting for replica %s failed", replica.id)
            became_ready = False
        if became_ready and replica.state is ReplicaState.STARTING:
            replica.state = ReplicaState.READY
            replica.last_active = time.monotonic()
            pool.startup_failures = 0
            pool.queue.dispatch()
        elif not exit_code.done():
            # Scaled down before it became ready, or it never did: stop it either way.
            if replica.state is not ReplicaState.STARTING:
                replica.state = ReplicaState.STOPPING
            await self._backend.stop_replica(replica.handle, grace=2.0)
        code = await exit_code
        was_starting = replica.state is ReplicaState.STARTING
        pool.replicas.pop(replica.id, None)
        if was_starting:
            self._startup_failed(pool, replica, f"replica exited with code {code} during startup")
        elif replica.state is not ReplicaState.STOPPING:
            log.warning("replica %s of %s exited unexpectedly (code %s)", replica.id, key, code)
            self._logs.write(
                key.app,
                key.function,
                replica.id,
                f"[ember] replica exited unexpectedly with code {code}",
            )
        self._logs.forget(replica.id)
        if pool.spec.volumes:  # its working copies, if it could not remove them itself
            folder = replica_dir(self._settings.volumes_dir, replica.id)
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _wait_ready(
        self, pool: Pool, replica: Replica, exit_code: asyncio.Future[int]
    ) -> bool:
        # A web_server may ask for longer than the server's default (vLLM takes minutes on a CPU).
        web = pool.spec.web
        timeout = max(self._settings.replica_startup_timeout, web.startup_timeout if web else 0)
        deadline = time.monotonic() + timeout
        while not exit_code.done() and replica.state is ReplicaState.STARTING:
            if time.monotonic() > deadline:
                self._logs.write(
                    pool.key.app,
                    pool.key.function,
                    replica.id,
                    f"[ember] not healthy within {timeout:g} s; stopping it",
                )
                return False
            if await self.healthy(replica, timeout=1.0):
                return True
            await asyncio.sleep(0.02)
        return False

    async def healthy(self, replica: Replica, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.request(
                    "GET", replica.handle.host, replica.handle.port, HEALTH_PATH
                )
                await response.read()
        except (HttpError, TimeoutError):
            return False
        return response.status == 200

    def _startup_failed(self, pool: Pool, replica: Replica, reason: str) -> None:
        pool.replicas.pop(replica.id, None)
        pool.startup_failures += 1
        pool.next_start_at = time.monotonic() + min(30.0, 0.5 * 2**pool.startup_failures)
        tail = self._logs.tail(replica.id)
        pool.last_failure = f"{reason}. Last output:\n{tail}" if tail else reason
        self._logs.write(pool.key.app, pool.key.function, replica.id, f"[ember] {reason}")
        pool.queue.fail_waiters(
            ReplicaStartupError(
                f"{pool.key.function} could not start a replica: {pool.last_failure}"
            )
        )

    def stop(self, pool: Pool, replica: Replica) -> None:
        """Drain: take no new inputs, wait for in-flight ones, run exit hooks, stop."""
        if replica.state in (ReplicaState.DRAINING, ReplicaState.STOPPING):
            return
        replica.state = ReplicaState.DRAINING
        self._spawn(self._drain_and_stop(replica))

    async def _drain_and_stop(self, replica: Replica) -> None:
        while replica.in_flight > 0:
            await asyncio.sleep(0.05)
        replica.state = ReplicaState.STOPPING
        if replica.handle is not None:
            await self._backend.stop_replica(
                replica.handle, self._settings.replica_graceful_shutdown
            )

    def kill(self, pool: Pool, replica: Replica) -> None:
        """Stop a replica that is stuck or broken, without waiting for its inputs."""
        replica.state = ReplicaState.STOPPING
        if replica.handle is not None:
            self._spawn(self._backend.stop_replica(replica.handle, grace=2.0))

    async def check_health(self, pool: Pool) -> None:
        """Replace ready replicas that stopped answering their health check."""
        ready = [r for r in pool.replicas.values() if r.ready and r.in_flight == 0]
        results = await asyncio.gather(*(self.healthy(r, timeout=5.0) for r in ready))
        for replica, ok in zip(ready, results, strict=True):
            if not ok and replica.ready:
                self._logs.write(
                    pool.key.app,
                    pool.key.function,
                    replica.id,
                    "[ember] health check failed; replacing replica",
                )
                self.kill(pool, replica)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._backend.close()
