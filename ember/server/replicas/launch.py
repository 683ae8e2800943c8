"""What a replica is launched with: its pool's ReplicaSpec, its assignment, its environment."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ember import wire
from ember.backends.base import ReplicaLaunch
from ember.runtime.images import BuiltImage
from ember.server.logs import LogSink
from ember.server.pools import Pool
from ember.server.replicas.state import ReplicaRecord
from ember.server.settings import ServerSettings


class Launcher:
    def __init__(
        self,
        settings: ServerSettings,
        logs: LogSink,
        replica_token: Callable[[str], Awaitable[str]],
        secret_env: Callable[[wire.FunctionSpec], Awaitable[dict[str, str]]],
        image: Callable[[wire.FunctionSpec], BuiltImage | None],
    ) -> None:
        self._settings, self._logs = settings, logs
        self._replica_token, self._secret_env, self._image = replica_token, secret_env, image

    def spec(self, pool: Pool) -> wire.ReplicaSpec:
        """The same for every replica of the pool."""
        settings = self._settings
        return wire.ReplicaSpec(
            app_name=pool.key.app,
            version=pool.key.version,
            declared_name=pool.deploy.declared_name,
            module=pool.deploy.module,
            source_dir=str(pool.source_dir) if pool.source_dir else None,
            function=pool.spec,
            params=pool.key.params,
            server_url=settings.replica_server_url,
            graceful_shutdown=settings.replica_graceful_shutdown,
            ca_cert=str(settings.tls_cert) if settings.tls_cert else None,
            volume_root=str(settings.volumes_dir),
            volume_storage=settings.volume_storage,
        )

    async def launch(self, pool: Pool, replica: ReplicaRecord) -> ReplicaLaunch:
        """Everything the backend needs; raises if a secret it names was deleted meanwhile."""
        return await self._launch(pool, replica.id, list(replica.gpus), replica.cpus)

    async def template_launch(self, pool: Pool, template_id: str) -> ReplicaLaunch:
        """A template's: no GPU, and torch told to ask NVML, not CUDA, whether GPUs exist (a
        process that initialised CUDA cannot fork replicas that use it)."""
        launch = await self._launch(pool, template_id, [], ())
        launch.env["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        return launch

    async def _launch(
        self, pool: Pool, replica_id: str, gpus: list[int], cpus: tuple[int, ...]
    ) -> ReplicaLaunch:
        key = pool.key
        secrets = await self._secret_env(pool.spec)
        self._logs.redact(key.app, secrets.values())
        image = self._image(pool.spec)
        assignment = wire.ReplicaAssignment(
            replica_id=replica_id, token=await self._replica_token(key.app), gpus=gpus
        )
        return ReplicaLaunch(
            spec=self.spec(pool),
            assignment=assignment,
            on_log=lambda text: self._logs.write(key.app, key.function, replica_id, text),
            env={**(image.env if image else {}), **secrets},
            python=str(image.python) if image else None,
            cwd=str(image.workdir) if image else None,
            cpus=cpus,
            memory_mib=pool.resources.memory,
        )
