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

    async def wait_ready(self) -> None:
        """Return once the replica reports ready; ReplicaStartFailed if it fails or exits first."""
        ...

    async def wait(self) -> int:
        """Wait for the replica to exit; returns its exit code."""
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

    async def close(self) -> None:
        """Stop everything this backend started."""
        ...
