"""ControlPlane: the server's parts wired together, started and stopped as one."""

from __future__ import annotations

import asyncio
import logging

from ember import wire
from ember.backends.base import Backend
from ember.backends.local import LocalBackend
from ember.config_file import read_config_file, write_client_config
from ember.http1 import Http1Pool
from ember.runtime.images import BuiltImage, ImageBuilder, ImageBuildError
from ember.server.autoscaler.loop import Autoscaler
from ember.server.calls import CallRecorder, SpawnedCalls
from ember.server.deployments import Deployment, Deployments
from ember.server.dispatch import Dispatcher
from ember.server.errors import ApiError
from ember.server.home import prepare_home
from ember.server.lifecycle import ReplicaManager
from ember.server.logs import LogSink
from ember.server.pools import PoolRegistry
from ember.server.scheduler import Scheduler
from ember.server.secrets import SecretBox, load_key
from ember.server.settings import ServerSettings
from ember.server.store.sql import SqlStore
from ember.server.tokens import ReplicaTokens
from ember.server.volumes import Volumes

log = logging.getLogger("ember.server")


class ControlPlane:
    def __init__(self, settings: ServerSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        prepare_home(settings.home, settings.db_url, settings.apps_dir)
        self.secrets = SecretBox(load_key(settings.home, settings.secret_key))
        self.store = SqlStore(settings.db_url, blobs=self.secrets)
        self.http = Http1Pool()
        self.images = ImageBuilder(settings.home / "images")
        self.volumes = Volumes(self.store, settings.volumes_dir)
        self.logs = LogSink(self.store)
        self.replica_tokens = ReplicaTokens(self.store)
        self.replicas = ReplicaManager(
            settings,
            backend or LocalBackend(),
            self.logs,
            self.http,
            self.replica_tokens.for_app,
            self.secret_env,
            self.image_for,
        )
        self.pools = PoolRegistry(on_wait=self._on_wait)
        self.autoscaler = Autoscaler(settings, self.pools, self.replicas)
        self.deployments = Deployments(self.store, settings.apps_dir, self.pools, self.put_secret)
        self.dispatcher = Dispatcher(settings, self.replicas, self.http)
        self.recorder = CallRecorder(self.store)
        self.spawns = SpawnedCalls(self.store, self.run_inputs)
        self.scheduler = Scheduler(self.deployments, self.spawns, self.logs)
        self._loops: list[asyncio.Task[None]] = []

    def _on_wait(self) -> None:
        self.autoscaler.trigger()

    def put_secret(self, name: str, values: dict[str, str]) -> None:
        self.store.put_secret(name, self.secrets.seal(values), list(values))

    def secret_env(self, spec: wire.FunctionSpec) -> dict[str, str]:
        """The environment a replica of `spec` gets from its secrets (later ones win)."""
        env: dict[str, str] = {}
        for name in spec.secrets:
            sealed = self.store.get_secret(name)
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

    async def deploy(self, request: wire.DeployRequest) -> Deployment:
        """Check the request, build its images, then make it the app's current version."""
        self.deployments.validate(request)
        self.volumes.check_deploy(request)
        await self.build_images(request)
        self.volumes.create_missing(request)
        deployment = self.deployments.deploy(request)
        self.autoscaler.trigger()
        return deployment

    async def build_images(self, request: wire.DeployRequest) -> None:
        """Build every image the app uses (once per hash), before anything is deployed."""
        specs = {str(f.image["hash"]): f.image for f in request.functions if f.image}
        for spec in specs.values():
            try:
                await asyncio.to_thread(self.images.build, spec)
            except ImageBuildError as exc:
                raise ApiError(400, "ImageBuildError", f"image build failed: {exc}") from None

    async def run_inputs(
        self, app: str, function: str, method: str | None, params: str, inputs: list[bytes]
    ) -> list[bytes]:
        """Run inputs on the current version of `app`'s `function` (the `.remote` path)."""
        deployment = self.deployments.current(app)
        pool = self.deployments.pool(deployment, function, params)
        return await self.dispatcher.run(pool, method, inputs)

    async def start(self) -> None:
        self.replica_tokens.revoke_all()  # those of a server process that did not stop cleanly
        self.bootstrap_admin_token()
        self.deployments.load()
        self.volumes.start()
        self.logs.start()
        self.recorder.start()
        recovered = self.spawns.recover()
        if recovered:
            log.info("re-running %d spawned call(s) left unfinished", recovered)
        self._loops = [
            asyncio.ensure_future(self.autoscaler.run()),
            asyncio.ensure_future(self.scheduler.run()),
        ]

    def bootstrap_admin_token(self) -> None:
        """On first start, make an admin token and hand it to the CLI through config.toml."""
        if not self.settings.write_client_config:
            return
        token = read_config_file(self.settings.home).get("token")
        if token is None or self.store.verify_token(token) is None:
            token = self.store.create_token("admin", kind="admin").token
            log.info("created an admin token; wrote it to %s/config.toml", self.settings.home)
        write_client_config(self.settings.home, self.settings.url, token, self.settings.tls_cert)

    async def stop(self) -> None:
        """Stop every replica (no orphans), then flush what is buffered."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.spawns.close()
        await self.replicas.close()
        await self.logs.close()
        await self.recorder.close()
        await self.http.close()
        self.replica_tokens.revoke_all()
        self.store.close()
