"""The Backend interface: start and stop replica processes somewhere, and watch them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ember import wire

LogCallback = Callable[[str], None]


@dataclass
class ReplicaLaunch:
    """What a backend needs to start one replica."""

    settings: wire.ReplicaSettings  # listen_fd is filled in by the backend
    on_log: LogCallback  # called with each line the replica prints
    env: dict[str, str] = field(default_factory=dict)  # from the image and the secrets
    python: str | None = None  # the image's interpreter; default: the server's
    cwd: str | None = None  # the image's workdir; default: the app's source folder


class ReplicaHandle(Protocol):
    @property
    def host(self) -> str:
        """Address at which the replica's servers (its own, and a web_server's) are reached."""
        ...

    @property
    def port(self) -> int:
        """Port of the replica's own HTTP server (inputs, health, web endpoints)."""
        ...

    async def wait(self) -> int:
        """Wait for the replica process to exit; returns its exit code."""
        ...


class Backend(Protocol):
    """Places replicas. Implementations: local (processes on this host); ray (actors)."""

    async def start_replica(self, launch: ReplicaLaunch) -> ReplicaHandle:
        """Start a replica process; returns once it is spawned, not once it is ready."""
        ...

    async def stop_replica(self, handle: ReplicaHandle, grace: float) -> None:
        """SIGTERM (drain, run exit hooks), then kill after `grace` seconds; waits for exit."""
        ...

    async def close(self) -> None:
        """Stop everything this backend started."""
        ...
