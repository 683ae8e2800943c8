"""On a Ray node: the actor that runs one replica there, as the local backend runs one here.

Ray places a `ReplicaHost` actor with the function's resources (its GPUs are in the actor's
`CUDA_VISIBLE_DEVICES`, chosen by Ray); the actor then does on its node what the server does on
its own host: unpack the app's source (sent through Ray's object store, kept per content hash),
build the image (once per hash and node; a replica that finds another one building it waits,
and says so in its log), and start `python -m ember.runtime.replica` through a `LocalBackend`
listening on the node's address, sandboxed where the node has bubblewrap and passt. Everything
the replica prints, and what the actor has to say, is kept in order for the server to fetch
(`logs`, a long poll). Nothing here is imported by the server but the class itself, which Ray
pickles by reference: every node needs Ember installed, as the server has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tarfile
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ember import wire
from ember.backends.base import ReplicaLaunch, ReplicaStartFailed
from ember.backends.local import LocalBackend, LocalReplica, base_environment
from ember.backends.sandbox import Sandbox
from ember.runtime.images import BuiltImage, ImageBuilder
from ember.runtime.mounts import replica_dir

MAX_KEPT_LINES = 10_000  # log lines the actor holds for a server that fell behind
LOG_POLL = 30.0  # seconds a `logs` call waits for new lines before answering empty


@dataclass(frozen=True)
class NodeLaunch:
    """What the server sends with the start of one replica (server paths are rewritten here)."""

    spec: str  # wire.ReplicaSpec as JSON
    assignment: str  # wire.ReplicaAssignment as JSON; its GPUs are the node's, set here
    env: dict[str, str]  # the image's env, then the secrets
    source_digest: str | None  # sha256 of the source archive; the archive comes beside it
    image: dict[str, Any] | None  # the image spec, built on the node
    node_dir: str  # where the node keeps sources, images, records and volume copies
    sandbox: bool  # sandbox replicas where the node allows it
    server_ports: tuple[int, ...]  # the server's ports, reached on a sandbox's loopback
    ca_pem: str | None = None  # the server's certificate, for nested calls over HTTPS


@dataclass(frozen=True)
class Started:
    """Where the replica listens: the node's address, its port, its web_server's port; and its
    ready report (its start's phases)."""

    host: str
    port: int
    web_port: int | None
    pid: int
    ready: str = ""  # wire.ReplicaStatus as JSON, once the replica is ready


@dataclass
class _Log:
    """The replica's lines in order, numbered from 0, the oldest dropped past a bound."""

    lines: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_KEPT_LINES))
    total: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def write(self, line: str) -> None:
        self.lines.append(line)
        self.total += 1
        self.changed.set()

    def close(self) -> None:
        """No more lines: a `logs` call that has them all says the replica is gone."""
        self.closed = True
        self.changed.set()

    def since(self, cursor: int) -> list[str]:
        first = self.total - len(self.lines)
        skipped = max(0, first - cursor)
        kept = list(self.lines)[max(0, cursor - first) :]
        gap = [f"[ember] {skipped} log line(s) were dropped on the node"] if skipped else []
        return gap + kept


class ReplicaHost:
    """One replica on this node: `start` it, fetch its `logs`, `wait` for its exit, `stop` it."""

    def __init__(self) -> None:
        self._log = _Log()
        self._backend: LocalBackend | None = None
        self._replica: LocalReplica | None = None
        self._exited: asyncio.Future[int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._scratch: str | None = None  # the replica's volume copies on this node

    def _exit_future(self) -> asyncio.Future[int]:
        if self._exited is None:
            self._exited = asyncio.get_running_loop().create_future()
        return self._exited

    async def start(self, launch: NodeLaunch, source: list[Any]) -> Started | str:
        """Prepare and start the replica, then wait until it is ready; the reason it is not,
        as text, if it fails (the server shows it with the replica's last lines)."""
        exited = self._exit_future()
        try:
            started = await self._start(launch, source)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the server shows it as the reason
            self._log.write(f"[ember] could not start the replica on this node: {exc}")
            if not exited.done():
                exited.set_result(1)
            self._log.close()
            return str(exc)
        assert self._replica is not None
        self._watcher = asyncio.ensure_future(self._watch(self._replica, self._scratch))
        try:
            status = await self._replica.wait_ready()
        except ReplicaStartFailed as exc:
            return str(exc)
        return replace(started, ready=status.model_dump_json())

    async def _start(self, launch: NodeLaunch, source: list[Any]) -> Started:
        import ray  # the node has it: this runs in a Ray worker

        node = Path(launch.node_dir)
        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self._log.write(f"[ember] on Ray node {host}")
        spec = wire.ReplicaSpec.model_validate_json(launch.spec)
        assignment = wire.ReplicaAssignment.model_validate_json(launch.assignment)
        # Ray chose the GPUs: they are in this actor's CUDA_VISIBLE_DEVICES.
        assignment.gpus = [int(i) for i in ray.get_gpu_ids()]
        updates: dict[str, Any] = {}
        if launch.source_digest is not None:
            updates["source_dir"] = str(await self._source(node, launch.source_digest, source))
        if spec.volume_storage == "shared":  # working copies on this node's own disk
            updates["volume_scratch"] = str(node / "volumes")
        if launch.ca_pem is not None:
            updates["ca_cert"] = str(_write_once(node / "tls", launch.ca_pem))
        image = await self._image(node, launch.image, host) if launch.image else None
        sandbox, why_not = (
            await asyncio.to_thread(Sandbox.detect) if launch.sandbox else (None, "--no-sandbox")
        )
        if launch.sandbox and sandbox is None:
            self._log.write(f"[ember] replicas on {host} run without a sandbox: {why_not}")
        elif sandbox is not None and sandbox.shared is not None:
            self._log.write(f"[ember] apps on {host} are not isolated from each other "
                            f"(single-tenant mode): {sandbox.shared}")  # fmt: skip
        self._backend = LocalBackend(
            gpus=(),
            base_env=base_environment(os.environ),
            server_ports=launch.server_ports,
            run_dir=node / "run",
            sandbox=sandbox,
            isolation_missing=why_not,
            host=host,
        )
        self._scratch = updates.get("volume_scratch")
        self._replica = await self._backend.start_replica(
            ReplicaLaunch(
                spec=spec.model_copy(update=updates),
                assignment=assignment,
                on_log=self._log.write,
                env=launch.env,
                python=str(image.python) if image else None,
                cwd=str(image.workdir) if image else None,
            )
        )
        replica = self._replica
        return Started(host, replica.port, replica.web_port, replica.pid)

    async def _source(self, node: Path, digest: str, source: list[Any]) -> Path:
        """The app's source folder on this node, unpacked once per content hash."""
        target = node / "apps" / digest
        if target.is_dir():
            return target
        archive: bytes = await source[0]  # fetched from the object store only when needed
        await asyncio.to_thread(_unpack_once, archive, digest, target)
        return target

    async def _image(self, node: Path, spec: dict[str, Any], host: str) -> BuiltImage:
        """The image, built on this node once per hash; others wait for the one building it."""
        builder = ImageBuilder(node / "images")
        image_hash = str(spec["hash"])
        if (built := builder.built(image_hash)) is not None:
            return built
        loop = asyncio.get_running_loop()

        def log(line: str) -> None:
            loop.call_soon_threadsafe(self._log.write, f"[image] {line}")

        def build() -> BuiltImage:
            with _locked(node / "images" / f"{image_hash}.lock", on_wait=waiting):
                return builder.build(spec, log)

        def waiting() -> None:
            log(f"waiting for another replica on {host} to build image {image_hash[:12]}")

        self._log.write(f"[ember] preparing image {image_hash[:12]} on {host}")
        return await asyncio.to_thread(build)

    async def _watch(self, replica: LocalReplica, scratch: str | None) -> None:
        code = await replica.wait()
        if scratch is not None:  # its working copies, if it could not remove them itself
            folder = replica_dir(Path(scratch), replica.replica_id)
            await asyncio.to_thread(shutil.rmtree, folder, True)
        exited = self._exit_future()
        if not exited.done():
            exited.set_result(code)
        self._log.close()

    async def logs(self, cursor: int, wait: bool = True) -> tuple[int, list[str], bool]:
        """Lines from `cursor` on (waiting up to LOG_POLL for some, if `wait`), the next cursor,
        and whether the replica is gone and every line was sent."""
        log = self._log
        if wait and log.total <= cursor and not log.closed:
            log.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(log.changed.wait(), LOG_POLL)
        lines = log.since(cursor)
        return log.total, lines, log.closed and log.total <= cursor

    async def wait(self) -> int:
        """The replica's exit code, once it exited (or failed before it was spawned)."""
        return await self._exit_future()

    async def stop(self, grace: float) -> None:
        """SIGTERM (drain, exit hooks), kill after `grace`; returns once the replica is gone."""
        if self._backend is not None and self._replica is not None:
            await self._backend.stop_replica(self._replica, grace)
        exited = self._exit_future()
        if not exited.done():
            exited.set_result(0)
        self._log.close()


def pack_source(folder: Path) -> tuple[str, bytes]:
    """The app's source folder as a tar archive, and the sha256 that names it on the nodes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def _unpack_once(archive: bytes, digest: str, target: Path) -> None:
    if hashlib.sha256(archive).hexdigest() != digest:
        raise ReplicaStartFailed("the app's source arrived damaged (its hash differs)")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{digest[:12]}-{uuid.uuid4().hex[:6]}")
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(scratch, filter="data")  # nothing outside the folder
        with contextlib.suppress(FileExistsError, OSError):
            scratch.rename(target)  # another replica may have unpacked it meanwhile
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not target.is_dir():
        raise ReplicaStartFailed(f"could not unpack the app's source into {target}")


def _write_once(folder: Path, text: str) -> Path:
    """`text` in a file named by its hash (the same file for every replica that needs it)."""
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.pem"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{uuid.uuid4().hex}")
        tmp.write_text(text)
        tmp.replace(path)
    return path


@contextlib.contextmanager
def _locked(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """An exclusive flock on `path`; `on_wait` is called once if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
