"""Shared fixtures: a real `ember server` process on loopback, and the SDK pointed at it."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.postgres import PostgresCluster, skip_without_postgres

APPS = Path(__file__).parent / "apps"
# The backend that the `server` fixture's servers use: "local", or "ray" (a Ray cluster of three
# nodes on this machine, started once per session: tests/ray_cluster.py).
BACKEND = os.environ.get("EMBER_TEST_BACKEND", "local")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc), to check nothing is orphaned."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    home: Path
    log_path: Path
    cluster: Any = None  # the RayCluster its replicas run on (--backend ray)

    @property
    def token(self) -> str:
        with (self.home / "config.toml").open("rb") as f:
            return str(tomllib.load(f)["token"])

    def env(self) -> dict[str, str]:
        env = {
            "EMBER_HOME": str(self.home),
            "EMBER_SERVER_URL": self.url,
            "EMBER_TOKEN": self.token,
        }
        if self.url.startswith("https"):
            env["EMBER_CA_CERT"] = str(self.home / "tls" / "cert.pem")
        return env

    def replica_pids(self) -> list[int]:
        if self.cluster is not None:
            return [p for p in self.cluster.replica_pids() if alive(p)]
        return [p for p in descendants(self.process.pid) if alive(p)]

    def stop(self) -> list[int]:
        """SIGTERM the server; returns replica processes that outlived it (should be none)."""
        pids = descendants(self.process.pid)
        if self.cluster is not None:
            pids += self.cluster.replica_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [p for p in pids if alive(p)]


def start_server(
    home: Path,
    port: int | None = None,
    tls_self_signed: bool = False,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    cluster: Any = None,
    shared_volumes: bool = True,
) -> RunningServer:
    """A real `ember server`; on the Ray backend when given a RayCluster, with its volumes on
    the shared-filesystem driver (a folder every node of that cluster sees) unless told not."""
    if cluster is not None:
        extra_args = [
            "--backend",
            "ray",
            "--ray-address",
            cluster.address,
            "--ray-node-dir",
            str(cluster.root / "node"),
            *(extra_args or []),
        ]
        if shared_volumes:
            extra_args += ["--volumes-path", str(home / "shared-volumes")]
    port = port or free_port()
    log_path = home / f"server-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, EMBER_HOME=str(home), **(extra_env or {}))
    env.pop("EMBER_SERVER_URL", None)
    env.pop("EMBER_TOKEN", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "ember.cli.main", "server", "--port", str(port)]
            + (["--tls-self-signed"] if tls_self_signed else [])
            + (extra_args or []),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"https://localhost:{port}" if tls_self_signed else f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        cert = home / "tls" / "cert.pem"
        try:
            if tls_self_signed and not cert.exists():
                raise httpx.ConnectError("certificate not written yet")
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=cert) if tls_self_signed else True
            )
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                return RunningServer(process, url, home, log_path, cluster)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster on this machine: a head and two workers with two (declared) H100 each."""
    from tests.ray_cluster import RayCluster, ray_installed

    if not ray_installed():
        pytest.skip("Ray is not installed (the ray extra: scripts/setup ray)")
    cluster = RayCluster()
    try:
        cluster.add_node(num_cpus=2)
        for _ in range(2):
            cluster.add_node(num_cpus=4, num_gpus=2, gpu_type="H100")
        yield cluster
    finally:
        assert not cluster.stop(), "Ray processes outlived the cluster"


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    """A real server in its own EMBER_HOME, with this process's SDK pointed at it; on
    EMBER_TEST_BACKEND's backend."""
    cluster = request.getfixturevalue("ray_cluster") if BACKEND == "ray" else None
    running = start_server(tmp_path / "home", cluster=cluster)
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    yield running
    leftovers = running.stop()
    assert not leftovers, f"replica processes outlived the server: {leftovers}"


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session (started on first need)."""
    cluster = PostgresCluster(skip_without_postgres(), free_port())
    cluster.create()
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.remove()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh database on the session's PostgreSQL cluster."""
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store database in each dialect: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ember.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
