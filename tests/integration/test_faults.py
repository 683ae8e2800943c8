"""Faults user code causes, as the reliability probe ran them: output that is not tidy lines (D1),
processes of its own when the server is killed (D2), its own server dying (D10)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

import ember
from ember import wire
from tests.conftest import RunningServer, alive, descendants, free_port, start_server, wait_until
from tests.integration.helpers import ember_cli, load


def replica_of(pid: int) -> str | None:
    """The EMBER_REPLICA_ID a process runs under (its replica's, inherited by its children)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(wire.REPLICA_ID_ENV.encode() + b"="):
            return entry.split(b"=", 1)[1].decode()
    return None


def processes_of(replicas: set[str]) -> dict[int, bytes]:
    """Live processes of these replicas, anywhere on the host: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and replica_of(int(entry.name)) in replicas:
            pid = int(entry.name)
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if alive(pid):
                found[pid] = cmdline
    return found


def test_output_of_any_shape_never_stalls_a_replica(server: RunningServer) -> None:
    """D1: a 10 MB line, a progress bar of 2,000 `\\r` updates, bytes that are not UTF-8. Every
    call returns, on the same replica, and the log has readable lines."""
    load("faults").app.deploy()
    noisy = ember.Function.from_name("faults", "noisy")
    served_by = {noisy.remote(2000) for _ in range(3)}  # the probe's third call hung
    assert len(served_by) == 1  # never replaced

    def logged() -> str | None:
        result = ember_cli("app", "logs", "faults", "--function", "noisy", env=server.env())
        assert result.returncode == 0, result.stderr
        return result.stdout if result.stdout.count("garbage") == 3 else None

    lines = wait_until(logged).splitlines()
    assert sum(line.endswith(" " + "x" * 16_384) for line in lines) == 3
    assert sum("the line above was cut at 16,384 bytes; 9,983,616 more" in ln for ln in lines) == 3
    assert sum(line.endswith(" downloading     1999/2000 " + "#" * 40) for line in lines) == 3
    assert not any("downloading     1998/2000" in line for line in lines)  # one line per bar
    assert sum(line.endswith(" \ufffd\ufffd garbage \ufffd\x00 end") for line in lines) == 3


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "no-sandbox"])
def test_kill_9_of_the_server_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: bool
) -> None:
    """D2: a web_server replica that started a server of its own, and a function that left a
    child behind; kill -9 of the server, start it again on the same home: nothing of the old run
    is left, and the endpoint answers."""
    options = [] if sandbox else ["--no-sandbox"]
    if not sandbox:
        monkeypatch.setenv("FAULTS_PORT", str(free_port()))  # replicas use the host's ports
    port, home = free_port(), tmp_path / "home"
    first = start_server(home, port=port, extra_args=options)
    for key, value in first.env().items():
        monkeypatch.setenv(key, value)
    load("faults").app.deploy()
    endpoint = f"{first.url}/faults/served/"
    assert httpx.get(endpoint, timeout=60).status_code == 200
    assert ember.Function.from_name("faults", "stubborn").remote(0.1) == "ok"
    old = {replica_of(pid) for pid in descendants(first.process.pid)} - {None}
    left = processes_of(old)  # type: ignore[arg-type]
    assert any(b"sleep\x00600" in cmd for cmd in left.values())
    assert any(b"asyncio.start_server" in cmd for cmd in left.values())

    first.process.kill()
    first.process.wait()
    second = start_server(home, port=port, extra_args=options)
    try:
        wait_until(lambda: not processes_of(old))  # type: ignore[arg-type]
        response = httpx.get(endpoint, timeout=60)
        assert response.status_code == 200 and response.text not in old
    finally:
        assert not second.stop()


def test_a_web_server_whose_own_server_died_is_replaced(server: RunningServer) -> None:
    """D10: the replica's runtime is up but the user's server is gone: health checks reach the
    user's port, so the replica is replaced and requests succeed again."""
    load("faults").app.deploy()
    endpoint = f"{server.url}/faults/served/"
    first = httpx.get(endpoint, timeout=60)
    assert first.status_code == 200
    (user_server,) = (
        pid for pid, cmd in processes_of({first.text}).items() if b"asyncio.start_server" in cmd
    )
    os.kill(user_server, signal.SIGKILL)

    def answered_by_another() -> bool:
        response = httpx.get(endpoint, timeout=60)
        return response.status_code == 200 and response.text != first.text

    wait_until(answered_by_another, timeout=90, interval=0.5)
    wait_until(lambda: not processes_of({first.text}))
    logs = ember_cli("app", "logs", "faults", "--replica", first.text, env=server.env()).stdout
    assert "[ember] health check failed 3 times; replacing it" in logs
