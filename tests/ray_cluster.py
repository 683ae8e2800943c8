"""A real multi-node Ray cluster on this machine, for tests: `ray start --block` per node.

Each node is its own `ray start` (a head, then workers joining it) with its own loopback
address (127.0.0.2, .3, ...: Ray keeps such an address as the node's, so replicas on different
nodes listen on different addresses) and free ports. Workers declare GPUs that are not there
(`--num-gpus`, `accelerator_type:H100`), as the server's `--gpus H100:4` does: Ray only counts
them. A node is killed as a machine dies: every process it runs, replicas included, at once
(SIGKILL). Health checks are tightened so that Ray notices a dead node in about a second
rather than its default of ~15 s. Nothing is left running: `stop` kills every process of every
node, by the ids of the processes these commands started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import alive, descendants

RAY = str(Path(sys.executable).parent / "ray")
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RayNode:
    ip: str
    process: subprocess.Popen[bytes]
    log: Path

    def processes(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def replica_pids(self) -> list[int]:
        return [pid for pid in descendants(self.process.pid) if _is_replica(pid)]


@dataclass
class RayCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    nodes: list[RayNode] = field(default_factory=list)
    address: str = ""

    def add_node(
        self,
        num_cpus: int = 2,
        num_gpus: int = 0,
        gpu_type: str | None = None,
        resources: dict[str, float] | None = None,
    ) -> RayNode:
        """A node (the head first); returns once Ray counts it among the live nodes."""
        ip = f"127.0.0.{len(self.nodes) + 2}"
        declared = dict(resources or {})
        if gpu_type:
            declared[f"accelerator_type:{gpu_type}"] = num_gpus
        args = [
            "--node-ip-address",
            ip,
            "--num-cpus",
            str(num_cpus),
            "--num-gpus",
            str(num_gpus),
            "--resources",
            json.dumps(declared),
            "--object-store-memory",
            str(80 * 2**20),
            "--disable-usage-stats",
            "--block",
        ]
        if not self.nodes:
            port = _free_port(ip)
            self.address = f"{ip}:{port}"
            args += [
                "--head",
                "--port",
                str(port),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(_free_port(ip)),
                "--ray-client-server-port",
                str(_free_port(ip)),
                "--temp-dir",
                str(self.root / "tmp"),
            ]
        else:
            args += ["--address", self.address]
        log = self.root / f"node-{ip}.log"
        env = {**os.environ, **FAST_HEALTH_CHECKS}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [RAY, "start", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = RayNode(ip, process, log)
        self.nodes.append(node)
        self._wait_alive(ip, node)
        return node

    def _wait_alive(self, ip: str, node: RayNode) -> None:
        """`ray start` says "Ray runtime started" once the node's raylet has registered."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {node.log.read_text()[-3000:]}")
            if "Ray runtime started" in node.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {ip} did not start: {node.log.read_text()[-3000:]}")

    def live_nodes(self) -> list[str]:
        """The addresses of the nodes Ray counts as alive (a driver of its own, for a second)."""
        script = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='error'); "
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() "
            "if n['Alive']]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return sorted(json.loads(out.stdout.strip().splitlines()[-1]))

    def kill_node(self, node: RayNode) -> None:
        """The node dies as a machine does: all its processes, replicas included, at once."""
        pids = node.processes()
        for pid in pids:
            _kill(pid)
        node.process.wait(timeout=30)

    def replica_pids(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.replica_pids()]

    def stop(self) -> list[int]:
        """Kill every node (workers first); returns processes that outlived that (none)."""
        pids = [pid for node in reversed(self.nodes) for pid in node.processes()]
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if alive(pid):
                _kill(pid)
        for node in self.nodes:
            node.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
        return [p for p in pids if alive(p)]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _is_replica(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ember.runtime.replica" in cmdline and b"bwrap" not in cmdline.split(b"\0")[0]
