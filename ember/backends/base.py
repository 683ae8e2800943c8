"""The Backend interface: what a place that runs replicas offers, and how one is started.

The server decides how many replicas each pool gets and which GPUs each one holds; a backend
starts one from a `ReplicaLaunch`, reports when it is ready (or why it failed) and when it exits,
and stops it. Implementations: `local.py` (sandboxed processes on this host), `ray.py` (each
replica a Ray actor, placed by Ray's scheduler on a node of a cluster).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ember import wire

LogCallback = Callable[[str], None]


class ReplicaStartFailed(Exception):
    """The replica exited or reported failure before it was ready; the message says why."""


class CheckpointError(Exception):
    """The driver refused to park or restore a replica; the message has its error."""


@dataclass(frozen=True)
class Gpu:
    index: int  # as CUDA_VISIBLE_DEVICES counts on this host
    type: str  # canonical, as `gpu=` spells it (ember/resources.py)
    name: str  # as the driver names it
    memory_mib: int = 0
    node: str = ""  # the machine it is in ("": this host); a replica's GPUs are on one machine


@dataclass(frozen=True)
class Capabilities:
    """What the replicas of this backend get; each `... _missing` says why not, or is None."""

    gpus: tuple[Gpu, ...]
    cores: int
    isolation_missing: str | None  # network namespace + PID namespace per replica
    memory_limit_missing: str | None  # `memory=` enforced
    cpu_limit_missing: str | None  # `cpu=` enforced
    where: str = "this host"  # what the GPUs are in, for messages ("the Ray cluster")
    forking_missing: str | None = "not supported"  # replicas forked from a template process
    checkpoint_missing: str | None = "not supported"  # parked replicas free their GPU
    # Apps isolated from each other and from the server's data (replicas as another user);
    # where missing, the server is single-tenant.
    tenancy_missing: str | None = "not supported"
    memory_bytes: int = 0  # host memory (what parked replicas may hold a share of)


@dataclass
class ReplicaLaunch:
    """What a backend needs to start one replica."""

    spec: wire.ReplicaSpec
    assignment: wire.ReplicaAssignment  # listen_fd / status_fd are the backend's to fill in
    on_log: LogCallback  # called with each line the replica prints
    env: dict[str, str] = field(default_factory=dict)  # the image's env, then the secrets
    python: str | None = None  # the image's interpreter; default: the server's
    cwd: str | None = None  # the image's workdir; default: the app's source folder
    cpus: tuple[int, ...] = ()  # cores to pin the replica to; empty: any
    memory_mib: int | None = None  # a hard memory limit, where the backend can enforce one


class ReplicaHandle(Protocol):
    @property
    def replica_id(self) -> str: ...

    @property
    def host(self) -> str:
        """Address at which the replica's own server (inputs, health, ASGI apps) is reached."""
        ...

    @property
    def port(self) -> int: ...

    @property
    def web_port(self) -> int | None:
        """Where a `web_server` function's own port is reached from the server, if it has one."""
        ...

    @property
    def pid(self) -> int | None:
        """The replica process's id on its host (None where the backend has no such notion)."""
        ...

    @property
    def tier(self) -> str:
        """How it started: "fresh" (a new process) or "fork" (from a template)."""
        ...

    async def wait_ready(self) -> wire.ReplicaStatus:
        """The replica's `ready` report (its phases); ReplicaStartFailed if it fails or exits
        first."""
        ...

    async def wait(self) -> int:
        """Wait for the replica to exit; returns its exit code."""
        ...

    async def sync_logs(self) -> None:
        """Deliver every line the replica printed so far to the launch's `on_log`."""
        ...


class Template(Protocol):
    async def wait_ready(self) -> wire.ReplicaStatus:
        """The template's `ready` report (its phases: imports, snap hooks); ReplicaStartFailed
        if a snap hook failed or the process exited."""
        ...


class Backend(Protocol):
    def capabilities(self) -> Capabilities: ...

    async def start_replica(self, launch: ReplicaLaunch) -> ReplicaHandle:
        """Start a replica; returns once it is spawned, not once it is ready."""
        ...

    async def stop_replica(self, handle: ReplicaHandle, grace: float) -> None:
        """SIGTERM (drain, run exit hooks), kill after `grace` seconds; waits for the exit.
        Everything the replica started goes with it."""
        ...

    async def start_template(self, launch: ReplicaLaunch) -> Template:
        """A process that prepares the pool's code once and forks replicas from it (where
        `capabilities().forking_missing` is None)."""
        ...

    async def fork_replica(self, template: Template, launch: ReplicaLaunch) -> ReplicaHandle: ...

    async def stop_template(self, template: Template) -> None: ...

    async def park(self, handle: ReplicaHandle) -> bool:
        """Checkpoint the GPU state of the replica's processes (its user code has already given
        back what it could): True if its GPU is free now, False where the driver cannot
        checkpoint (the replica then keeps its CUDA context)."""
        ...

    async def restore(self, handle: ReplicaHandle) -> None:
        """Undo `park`; CheckpointError if the driver cannot."""
        ...

    def memory_bytes(self, handle: ReplicaHandle) -> int:
        """Host memory the replica holds (all its processes), as far as the backend knows."""
        ...

    async def close(self) -> None:
        """Stop everything this backend started."""
        ...
