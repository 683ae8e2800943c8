"""The Ray backend: each replica is a Ray actor, placed by Ray's scheduler on a node of a cluster.

The server still decides how many replicas each pool gets and counts GPUs (`capabilities()`
reports the cluster's GPUs by type and node); Ray picks the node and the devices. An actor asks
for what the function asks: `num_gpus` and the GPU type as Ray's `accelerator_type:<TYPE>`
resource, `num_cpus`, `memory`; replicas of a function are spread over nodes (Ray's SPREAD, as
Ray Serve does). On its node the actor (`ray_node.py: ReplicaHost`) runs the replica through the
local backend, listening on the node's address, which the server proxies to. The app's source
travels through Ray's object store; the image is built on each node from its spec.

A node that dies takes its actors with it: Ray reports them dead, `wait()` returns, the replica
is lost (its inputs retried per `retries`) and the autoscaler starts replacements, on the nodes
that are left. Actors belong to the server's Ray job, so they go when the server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember import wire
from ember.backends.base import (
    Capabilities,
    CheckpointError,
    Gpu,
    LogCallback,
    ReplicaHandle,
    ReplicaLaunch,
    ReplicaStartFailed,
    Template,
)
from ember.backends.ray_node import NodeLaunch, ReplicaHost, Started, pack_source
from ember.resources import GPU_TYPES, gpu_type_of

log = logging.getLogger("ember.ray")

ACCELERATOR = "accelerator_type:"
LOST = -1  # the exit code of a replica whose actor or node died
CONNECT_TIMEOUT = 5.0  # seconds to reach the cluster's address before saying it is not there
PLACEMENT_NOTE_AFTER = 30.0  # seconds before a replica not started yet says why it may wait
STOP_MARGIN = 10.0  # seconds past the grace for the actor to answer a stop, then it is killed
KEPT_SOURCES = 16  # app sources kept in the object store (one per deployed version)
UNKNOWN_GPU = "unknown"  # a node's GPUs without an accelerator_type: only gpu="any" takes them
# What a replica without `cpu=` asks Ray for (Modal's default request). Not zero: Ray spreads
# actors by how much of each node they use, and actors that use nothing pile up on one node.
DEFAULT_CPU = 0.125
NOT_ON_RAY = "not on the Ray backend yet"  # forked replicas, GPU checkpoints of parked ones


class RayUnavailable(Exception):
    """Ray is not installed, or no cluster answers at the address; the message says which."""


@dataclass(frozen=True)
class ClusterGpus:
    """The cluster's GPUs (numbered across nodes), and the Ray resource that names each type."""

    gpus: tuple[Gpu, ...]
    resource_of: Mapping[str, str]  # Ember GPU type -> "accelerator_type:<Ray's name>"
    cores: int  # CPUs of the largest node: the most one replica can get


def cluster_gpus(nodes: Sequence[Mapping[str, Any]]) -> ClusterGpus:
    """What `ray.nodes()` says, as Ember counts it: each alive node's GPUs, of its type."""
    gpus: list[Gpu] = []
    resource_of: dict[str, str] = {}
    cores = 0
    for node in sorted(nodes, key=lambda n: str(n.get("NodeManagerAddress", ""))):
        if not node.get("Alive"):
            continue
        resources: Mapping[str, float] = node.get("Resources", {})
        cores = max(cores, int(resources.get("CPU", 0)))
        address = str(node.get("NodeManagerAddress", ""))
        gpu_type, resource = _node_gpu_type(resources)
        if resource is not None:
            resource_of[gpu_type] = resource
        for _ in range(int(resources.get("GPU", 0))):
            gpus.append(Gpu(len(gpus), gpu_type, f"{gpu_type} on {address}", node=address))
    return ClusterGpus(tuple(gpus), resource_of, cores)


def _node_gpu_type(resources: Mapping[str, float]) -> tuple[str, str | None]:
    """A node's GPU type, from its `accelerator_type:<name>` resources. Ray names an A100 of
    either size "A100"; a node that declares "A100-80GB" as well is taken at its word."""
    names = sorted(key[len(ACCELERATOR) :] for key in resources if key.startswith(ACCELERATOR))
    exact = [name for name in names if name.upper() in GPU_TYPES]
    if exact:
        name = max(exact, key=len)
        return name.upper(), ACCELERATOR + name
    if names:
        return gpu_type_of(names[0]), ACCELERATOR + names[0]
    return UNKNOWN_GPU, None


def actor_options(
    spec: wire.FunctionSpec, gpus: Sequence[Gpu], resource_of: Mapping[str, str], max_cores: int
) -> dict[str, Any]:
    """Ray's options for the actor of a replica that the server gave `gpus` (their number and
    type; Ray picks the devices)."""
    options: dict[str, Any] = {
        "num_cpus": min(spec.cpu or DEFAULT_CPU, max_cores or DEFAULT_CPU),
        "num_gpus": len(gpus),
        "scheduling_strategy": "SPREAD",
        "max_concurrency": 16,  # start, logs, wait and stop are all pending at once
    }
    if spec.memory:
        options["memory"] = spec.memory * 2**20
    resource = resource_of.get(gpus[0].type) if gpus else None
    if resource is not None:
        options["resources"] = {resource: 0.001}  # Ray's own accelerator_type= does the same
    return options


@dataclass(eq=False)
class RayReplica:
    """A replica's actor, and where the replica listens once it is ready."""

    replica_id: str
    actor: Any = field(repr=False)
    starting: Any = field(repr=False)  # the actor's `start` call: Started, or why not
    on_log: LogCallback = field(repr=False)
    log_pump: asyncio.Task[None] | None = field(default=None, repr=False)
    heard: bool = False  # the actor sent a line: Ray placed it on a node
    host: str = ""
    port: int = 0
    web_port: int | None = None
    pid: int | None = None
    killed: bool = False  # stopped by the server: its actor's end is no loss
    log_cursor: int = 0  # lines delivered to `on_log` so far
    tier: str = "fresh"  # the only tier here: a new process (no templates on Ray yet)
    _exit: asyncio.Future[int] | None = field(default=None, repr=False)

    async def wait_ready(self) -> wire.ReplicaStatus:
        from ray.exceptions import RayError

        starting = asyncio.ensure_future(self.starting)
        try:
            await asyncio.wait_for(asyncio.shield(starting), PLACEMENT_NOTE_AFTER)
        except TimeoutError:
            if not self.heard:  # not placed: no node has room for it now
                self.on_log(
                    f"[ember] not placed after {PLACEMENT_NOTE_AFTER:g} s: Ray starts the "
                    "replica once a node has what it asks for (`ray status` shows the cluster)"
                )
        except RayError:
            pass  # below
        try:
            started = await starting
        except RayError as exc:
            raise ReplicaStartFailed(f"its Ray actor died: {_reason(exc)}") from None
        if not isinstance(started, Started):
            raise ReplicaStartFailed(str(started))
        self.host, self.port, self.web_port, self.pid = (
            started.host, started.port, started.web_port, started.pid,
        )  # fmt: skip
        return wire.ReplicaStatus.model_validate_json(started.ready)

    async def wait(self) -> int:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._wait())
        return await asyncio.shield(self._exit)

    async def _wait(self) -> int:
        import ray
        from ray.exceptions import RayError

        try:
            code = int(await self.actor.wait.remote())
        except RayError as exc:
            if not self.killed:
                self.on_log(f"[ember] replica lost: its Ray node or actor died ({_reason(exc)})")
            code = LOST
        # The replica is gone, whatever ended it: its actor goes too, and gives Ray back the
        # GPUs and CPUs it holds for it.
        with contextlib.suppress(RayError):
            ray.kill(self.actor, no_restart=True)
        if self.log_pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.log_pump), 5.0)  # last lines first
        return code

    async def pump_logs(self) -> None:
        """The replica's lines, as the actor gets them, until it is gone."""
        from ray.exceptions import RayError

        while True:
            cursor = self.log_cursor
            try:
                total, lines, finished = await self.actor.logs.remote(cursor)
            except RayError:
                return
            self.heard = self.heard or bool(lines)
            self._deliver(cursor, total, lines)
            if finished:
                return

    async def sync_logs(self) -> None:
        """Deliver what the replica printed so far without waiting for the long poll (whose
        answer crosses the cluster on a path of its own, and may trail the replica's outputs)."""
        from ray.exceptions import RayError

        cursor = self.log_cursor
        with contextlib.suppress(RayError):
            total, lines, _ = await self.actor.logs.remote(cursor, False)
            self._deliver(cursor, total, lines)

    def _deliver(self, cursor: int, total: int, lines: list[str]) -> None:
        """Lines [cursor, total) as the actor sent them, less those delivered meanwhile."""
        for line in lines[max(0, self.log_cursor - cursor) :]:
            self.on_log(line)
        self.log_cursor = max(self.log_cursor, total)


class RayBackend:
    """Replicas as Ray actors on the cluster at `address` (None: the one `ray start` made here,
    or RAY_ADDRESS)."""

    def __init__(
        self,
        address: str | None,
        node_dir: str,
        server_ports: Sequence[int],
        sandbox: bool,
        ca_cert: Path | None = None,
    ) -> None:
        ray = _connect(address)
        self._ray = ray
        self._host_class = ray.remote(ReplicaHost)
        self._cluster = cluster_gpus(ray.nodes())
        self._node_dir, self._server_ports, self._sandbox = node_dir, tuple(server_ports), sandbox
        self._ca_pem = ca_cert.read_text() if ca_cert else None
        # Source folder -> digest, object ref; the most recent few (a node that needs an older
        # one after it left is sent it again: Ray keeps a ref alive while a task holds it).
        self._sources: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._replicas: set[RayReplica] = set()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            gpus=self._cluster.gpus,
            cores=self._cluster.cores,
            isolation_missing=None if self._sandbox else "--no-sandbox was given",
            # Each node decides (ray_node.py): a node that cannot switch users says so in the
            # log of each replica it runs.
            tenancy_missing=None if self._sandbox else "--no-sandbox was given",
            memory_limit_missing="Ray counts memory= when it places a replica, not enforced",
            cpu_limit_missing="Ray counts cpu= when it places a replica; not pinned",
            where="the Ray cluster",
            forking_missing=NOT_ON_RAY,
            checkpoint_missing=NOT_ON_RAY,
        )

    async def start_replica(self, launch: ReplicaLaunch) -> RayReplica:
        """Create the actor (Ray places it when it can) and send it the replica's start."""
        gpus = [self._cluster.gpus[i] for i in launch.assignment.gpus]
        options = actor_options(
            launch.spec.function, gpus, self._cluster.resource_of, self._cluster.cores
        )
        source = await self._source(launch.spec.source_dir)
        node_launch = NodeLaunch(
            spec=launch.spec.model_dump_json(),
            assignment=launch.assignment.model_copy(update={"gpus": []}).model_dump_json(),
            env=launch.env,
            source_digest=source[0] if source else None,
            image=dict(launch.spec.function.image) if launch.spec.function.image else None,
            node_dir=self._node_dir,
            sandbox=self._sandbox,
            server_ports=self._server_ports,
            ca_pem=self._ca_pem,
        )
        actor = self._host_class.options(**options).remote()
        refs = [source[1]] if source else []  # in a list: resolved on the node, if needed
        replica = RayReplica(
            replica_id=launch.assignment.replica_id,
            actor=actor,
            starting=actor.start.remote(node_launch, refs),
            on_log=launch.on_log,
        )
        replica.log_pump = asyncio.ensure_future(replica.pump_logs())
        self._replicas.add(replica)
        exited = asyncio.ensure_future(replica.wait())
        exited.add_done_callback(lambda _: self._replicas.discard(replica))
        return replica

    async def _source(self, source_dir: str | None) -> tuple[str, Any] | None:
        """The app's source in the object store, once per folder (a version's never changes)."""
        if source_dir is None:
            return None
        if source_dir not in self._sources:
            digest, data = await asyncio.to_thread(pack_source, Path(source_dir))
            self._sources[source_dir] = (digest, self._ray.put(data))
            while len(self._sources) > KEPT_SOURCES:
                self._sources.popitem(last=False)
        self._sources.move_to_end(source_dir)
        return self._sources[source_dir]

    async def stop_replica(self, handle: ReplicaHandle, grace: float) -> None:
        assert isinstance(handle, RayReplica)
        from ray.exceptions import RayError

        if handle.port:  # running: let it drain and run its exit hooks
            with contextlib.suppress(RayError, TimeoutError):
                await asyncio.wait_for(handle.actor.stop.remote(grace), grace + STOP_MARGIN)
        # Not started yet (maybe not even placed), or stopped: the actor goes, and with it
        # anything it started (replicas die with their parent).
        handle.killed = True
        self._ray.kill(handle.actor, no_restart=True)
        await handle.wait()

    async def start_template(self, launch: ReplicaLaunch) -> Template:
        """Not offered (`capabilities().forking_missing`): the pool's replicas start fresh."""
        raise ReplicaStartFailed(f"templates are {NOT_ON_RAY}")

    async def fork_replica(self, template: Template, launch: ReplicaLaunch) -> ReplicaHandle:
        raise ReplicaStartFailed(f"forked replicas are {NOT_ON_RAY}")

    async def stop_template(self, template: Template) -> None:
        raise TypeError(f"the Ray backend starts no templates; {template!r} is not one of its")

    async def park(self, handle: ReplicaHandle) -> bool:
        """No GPU checkpoints on Ray (`capabilities().checkpoint_missing`): a parked replica
        keeps its CUDA context, and its actor keeps its GPUs."""
        return False

    async def restore(self, handle: ReplicaHandle) -> None:
        """Never needed: `park` checkpoints nothing here."""
        raise CheckpointError(f"GPU checkpoints are {NOT_ON_RAY}")

    def memory_bytes(self, handle: ReplicaHandle) -> int:
        """Unknown: the replica's processes are on another machine (parked replicas on Ray are
        bounded by --max-parked and --park-for, not by memory)."""
        return 0

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_replica(r, 10.0) for r in list(self._replicas)))
        self._ray.shutdown()


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _connect(address: str | None) -> Any:
    """`ray`, connected to the cluster; RayUnavailable with what to do if it cannot be."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "the Ray backend needs Ray on the server and every node: pip install 'ember[ray]'"
        ) from None
    if address and address != "auto":
        _check_reachable(address)
    saved = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    try:
        ray.init(
            address=address or "auto",
            namespace="ember",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "this machine (or RAY_ADDRESS)"
        raise RayUnavailable(
            f"no Ray cluster at {where}: {_reason(exc)}; start one with `ray start --head`, "
            "and pass the address it prints with --ray-address"
        ) from None
    finally:
        if saved is not None:
            signal.signal(signal.SIGTERM, saved)  # the server's shutdown is its own, not Ray's
    return ray


def _check_reachable(address: str) -> None:
    """Ray waits minutes for an address where nothing listens; this fails in seconds."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.2:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise RayUnavailable(
            f"no Ray cluster at {address}: {exc.strerror or exc}; start one with "
            "`ray start --head` there, or check the address and port it printed"
        ) from None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
