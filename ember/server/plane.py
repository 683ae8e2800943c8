"""ControlPlane: the server's parts wired together, started and stopped as one.

It is also the one front door for inputs: `resolve` finds the pool of an app's function,
`admit` applies the queue bound with the caller's identity, for web requests (the gateway) and
`.remote()` / `.map` / `.spawn` (the calls API) alike.
"""

from __future__ import annotations

import asyncio
import logging

from ember import wire
from ember.backends.base import Backend, Capabilities
from ember.backends.gpus import host_gpus
from ember.backends.local import LocalBackend
from ember.backends.sandbox import Sandbox
from ember.config_file import read_config_file, write_client_config
from ember.http1 import Http1Pool
from ember.resources import Resources
from ember.runtime.images import BuiltImage, ImageBuilder, ImageBuildError
from ember.runtime.volume_storage import storage_for
from ember.server.autoscaler.loop import Autoscaler
from ember.server.calls import CallRecorder, SpawnedCalls
from ember.server.deployments import Deployment, Deployments
from ember.server.dispatch import Dispatcher
from ember.server.errors import ApiError
from ember.server.home import prepare_home
from ember.server.logs import LogSink
from ember.server.observability import Observability
from ember.server.pools import Pool, PoolRegistry
from ember.server.replicas.coldstarts import ColdStarts
from ember.server.replicas.launch import Launcher
from ember.server.replicas.placement import Inventory, resolve_resources
from ember.server.replicas.state import Lifecycle, ReplicaState
from ember.server.replicas.supervisor import Supervisor
from ember.server.replicas.templates import Templates
from ember.server.scheduler import Scheduler
from ember.server.scheduling.admission import Principal, admit
from ember.server.secrets import SecretBox, load_key
from ember.server.settings import ServerSettings
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import Store
from ember.server.store.sql import SqlStore
from ember.server.tokens import ReplicaTokens
from ember.server.volumes import Volumes

log = logging.getLogger("ember.server")
FOLLOW_INTERVAL = 2.0  # seconds between looks at the store for other servers' deploys and stops
LOG_SYNC_WAIT = 2.0  # seconds a read of an app's logs waits for its replicas' latest lines


def local_backend(settings: ServerSettings) -> LocalBackend:
    """Replica processes on this host, sandboxed unless the host cannot (or `--no-sandbox`)."""
    sandbox, why_not = Sandbox.detect() if settings.sandbox else (None, "--no-sandbox was given")
    return LocalBackend(
        gpus=host_gpus(settings.gpus),
        base_env=settings.replica_base_env,
        server_ports=[settings.port],
        run_dir=settings.home / "run",
        sandbox=sandbox,
        isolation_missing=why_not,
    )


def ray_backend(settings: ServerSettings) -> Backend:
    """Replicas as actors on the Ray cluster at `--ray-address` (RayUnavailable if none)."""
    from ember.backends.ray import RayBackend  # imports Ray only when it is asked for

    return RayBackend(
        settings.ray_address,
        node_dir=settings.ray_node_dir,
        server_ports=[settings.port],
        sandbox=settings.sandbox,
        ca_cert=settings.tls_cert,
    )


def make_backend(settings: ServerSettings) -> Backend:
    return ray_backend(settings) if settings.backend == "ray" else local_backend(settings)


class ControlPlane:
    def __init__(
        self, settings: ServerSettings, backend: Backend | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        prepare_home(settings.home, settings.db_url, settings.apps_dir)
        self.secrets = SecretBox(load_key(settings.home, settings.secret_key))
        store = store or SqlStore(settings.db_url, blobs=self.secrets)
        self.store = AsyncStore(store)
        self.http = Http1Pool()
        self.images = ImageBuilder(settings.home / "images")
        storage = storage_for(settings.volume_storage, settings.volumes_dir)
        self.volumes = Volumes(self.store, storage, on_cluster=settings.backend == "ray")
        self.logs = LogSink(store)
        self.replica_tokens = ReplicaTokens(self.store, settings.url)
        backend = backend or make_backend(settings)
        self.capabilities: Capabilities = backend.capabilities()
        self.lifecycle = Lifecycle()
        self.pools = PoolRegistry(on_wait=self._on_wait, clock=self.lifecycle.clock)
        self.lifecycle.subscribe(self.pools.on_replica_event)
        launcher = Launcher(
            settings, self.logs, self.replica_tokens.for_app, self.secret_env, self.image_for
        )
        inventory = Inventory(self.capabilities.gpus, tuple(range(self.capabilities.cores)))
        self.templates = Templates(backend, launcher)
        self.supervisor = Supervisor(
            settings, backend, self.lifecycle, inventory, launcher, self.logs, self.http,
            self.templates,
        )  # fmt: skip
        self.autoscaler = Autoscaler(
            settings, self.pools, self.supervisor, self.lifecycle,
            one_per_port=self.capabilities.isolation_missing is not None,
        )  # fmt: skip
        self.deployments = Deployments(
            self.store, settings.apps_dir, self.pools, self.put_secret, self.resources_of
        )
        self.cold_starts = ColdStarts(store, self.lifecycle)
        self.observability = Observability(
            settings, self.store, self.pools, self.deployments, self.lifecycle, self.logs,
            self.http, {gpu.index: gpu.type for gpu in self.capabilities.gpus},
        )  # fmt: skip
        self.meter, self.budgets = self.observability.meter, self.observability.budgets
        self.metrics = self.observability.metrics
        self.dispatcher = Dispatcher(
            settings, self.supervisor, self.http, self.cold_starts.answered, self.metrics
        )
        self.recorder = CallRecorder(store)
        self.spawns = SpawnedCalls(self.store, self.run_inputs)
        self.scheduler = Scheduler(self.deployments, self.spawns, self.logs)
        self._loops: list[asyncio.Task[None]] = []

    def _on_wait(self) -> None:
        self.autoscaler.trigger()

    async def put_secret(self, name: str, values: dict[str, str]) -> None:
        await self.store.run(Store.put_secret, name, self.secrets.seal(values), list(values))

    async def secret_env(self, spec: wire.FunctionSpec) -> dict[str, str]:
        """The environment a replica of `spec` gets from its secrets (later ones win)."""
        env: dict[str, str] = {}
        for name in spec.secrets:
            sealed = await self.store.run(Store.get_secret, name)
            if sealed is None:
                raise ApiError(
                    404,
                    "NotFoundError",
                    f"secret {name!r} was deleted; create it "
                    f"again with `ember secret create {name} KEY=VALUE`",
                )
            env.update(self.secrets.open(sealed, name))
        return env

    def image_for(self, spec: wire.FunctionSpec) -> BuiltImage | None:
        return self.images.built(str(spec.image["hash"])) if spec.image else None

    def resources_of(self, spec: wire.FunctionSpec) -> tuple[Resources, list[str]]:
        """What this host gives replicas of `spec`, and what it cannot honour."""
        return resolve_resources(spec, self.capabilities, self.settings.gpu_fallback_cpu)

    # -- deploys ---------------------------------------------------------------------------

    async def deploy(self, request: wire.DeployRequest) -> Deployment:
        """Check the request, build its images, then make it the app's current version."""
        await self.deployments.validate(request)
        await self.volumes.check_deploy(request)
        await self.build_images(request)
        await self.volumes.create_missing(request)
        deployment = await self.deployments.deploy(request)
        self.prepare_templates(deployment)
        names = ", ".join(f.name for f in request.functions)
        log.info("deployed %s version %d (%s)", deployment.app, deployment.version, names)
        self.autoscaler.trigger()
        return deployment

    def prepare_templates(self, deployment: Deployment) -> None:
        """Build the templates of functions that asked for memory snapshots, now, so their
        first replica is forked too (a class with required parameters: on first use)."""
        for spec in deployment.request.functions:
            wanted = spec.enable_memory_snapshot and not spec.needs_parameters
            if wanted and spec.name not in deployment.unplaceable:
                self.templates.want(self.deployments.pool(deployment, spec.name, ""))

    async def build_images(self, request: wire.DeployRequest) -> None:
        """Build every image the app uses (once per hash), before anything is deployed."""
        specs = {str(f.image["hash"]): f.image for f in request.functions if f.image}
        for spec in specs.values():
            try:
                await asyncio.to_thread(self.images.build, spec)
            except ImageBuildError as exc:
                raise ApiError(400, "ImageBuildError", f"image build failed: {exc}") from None

    # -- the front door for inputs -----------------------------------------------------------

    def resolve(self, app: str, function: str, params: str) -> Pool:
        """The pool that serves `function` of the current version of `app`."""
        return self.deployments.pool(self.deployments.current(app), function, params)

    def admit(self, principal: Principal, pool: Pool) -> None:
        admit(principal, pool, self.settings.max_queued_requests, self.budgets)

    async def call(
        self, principal: Principal, app: str, function: str, method: str | None, params: str,
        inputs: list[bytes],
    ) -> list[bytes]:  # fmt: skip
        """`.remote()` and `.map`: admitted, then run; one output frame per input."""
        pool = self.resolve(app, function, params)
        self.admit(principal, pool)
        return await self.dispatcher.run(pool, method, inputs)

    async def spawn(
        self, principal: Principal, app: str, function: str, method: str | None, params: str,
        payload: bytes,
    ) -> str:  # fmt: skip
        """`.spawn()`: admitted now, stored, run in the background; returns the call's id."""
        self.admit(principal, self.resolve(app, function, params))
        return await self.spawns.spawn(app, function, method, params, payload)

    async def run_inputs(
        self, app: str, function: str, method: str | None, params: str, inputs: list[bytes]
    ) -> list[bytes]:
        """Run inputs that were admitted already (spawned calls, schedules)."""
        return await self.dispatcher.run(self.resolve(app, function, params), method, inputs)

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        # The replica tokens of a server process that did not stop cleanly.
        await self.replica_tokens.revoke_all()
        await self.bootstrap_admin_token()
        await self.deployments.forget_ephemeral()
        for deployment in await self.deployments.follow(self.build_images):
            self.prepare_templates(deployment)
        self.volumes.start()
        self.logs.start()
        self.recorder.start()
        self.cold_starts.start()
        recovered = await self.spawns.recover()
        if recovered:
            log.info("re-running %d spawned call(s) left unfinished", recovered)
        self._loops = [
            asyncio.ensure_future(self.autoscaler.run()),
            asyncio.ensure_future(self.scheduler.run()),
            asyncio.ensure_future(self._follow_deployments()),
            *await self.observability.start(),
        ]

    async def _follow_deployments(self) -> None:
        """Servers sharing one database serve the same apps: what is deployed or stopped through
        another reaches this one within FOLLOW_INTERVAL (while the database is down, what this
        server has in memory goes on serving)."""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            try:
                for deployment in await self.deployments.follow(self.build_images):
                    self.prepare_templates(deployment)
            except Exception as exc:  # noqa: BLE001 - the database is down: serve from memory
                log.warning("could not read deployments from the store: %s", exc)

    async def bootstrap_admin_token(self) -> None:
        """On first start, make an admin token and hand it to the CLI through config.toml."""
        if not self.settings.write_client_config:
            return
        token = read_config_file(self.settings.home).get("token")
        if token is None or await self.store.run(Store.verify_token, token) is None:
            token = (await self.store.run(Store.create_token, "admin", kind="admin")).token
            log.info("created an admin token; wrote it to %s/config.toml", self.settings.home)
        write_client_config(self.settings.home, self.settings.url, token, self.settings.tls_cert)

    async def sync_logs(self, app: str) -> None:
        """Every line the app's live replicas printed so far, handed to the log sink (on Ray,
        lines come from other nodes on a path of their own)."""
        replicas = [r for pool in self.pools.for_app(app) for r in pool.replicas.values()]
        syncs = [asyncio.ensure_future(r.handle.sync_logs()) for r in replicas if r.handle]
        if syncs:
            _, late = await asyncio.wait(syncs, timeout=LOG_SYNC_WAIT)
            for sync in late:
                sync.cancel()

    async def stop(self) -> None:
        """Stop every replica (no orphans), then flush what is buffered."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.spawns.close()
        await self.supervisor.close()
        for pool in self.pools:  # their processes are gone: every replica ends, metered
            for replica in list(pool.replicas.values()):
                self.lifecycle.move(replica, ReplicaState.STOPPED, "the server stopped")
        await self.observability.stop()
        await self.logs.close()
        await self.recorder.close()
        await self.cold_starts.close()
        await self.http.close()
        await self.replica_tokens.revoke_all()
        self.store.close()
