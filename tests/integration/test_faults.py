"""Faults user code causes, as the reliability probe ran them: output that is not tidy lines (D1),
processes of its own when the server is killed or the replica stops (D2), its own server dying
(D10)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ember
from ember import wire
from ember.sdk.exceptions import ExecutionError, FunctionTimeoutError
from tests.conftest import RunningServer, alive, descendants, free_port, start_server, wait_until
from tests.integration.helpers import ember_cli, load, replica_count


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
    is left (no process, and as root no scratch folder: the replicas' homes), and the endpoint
    answers."""
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
    # A daemon with an empty environment too (its pid file holds a host pid only without a
    # sandbox; in one, it dies with the namespace).
    daemon = ember.Function.from_name("faults", "detach").remote(str(tmp_path / "d"))["daemon"]
    old = {replica_of(pid) for pid in descendants(first.process.pid)} - {None}
    left = processes_of(old)  # type: ignore[arg-type]
    assert any(b"sleep\x00600" in cmd for cmd in left.values())
    assert any(b"asyncio.start_server" in cmd for cmd in left.values())
    scratch = [home / "volumes" / ".replicas" / replica for replica in old]
    homes = sandbox and os.geteuid() == 0  # replicas run as ember-replica, each with a home
    assert all(folder.is_dir() for folder in scratch) == homes

    first.process.kill()
    first.process.wait()
    second = start_server(home, port=port, extra_args=options)
    try:
        wait_until(lambda: not processes_of(old))  # type: ignore[arg-type]
        assert not any(folder.exists() for folder in scratch)
        if not sandbox:
            wait_until(lambda: not alive(daemon))
        response = httpx.get(endpoint, timeout=60)
        assert response.status_code == 200 and response.text not in old
    finally:
        assert not second.stop()


@pytest.fixture
def bare_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """A server whose replicas run without a sandbox: plain processes in sessions of their own."""
    running = start_server(tmp_path / "home", extra_args=["--no-sandbox"])
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    load("faults").app.deploy()
    yield running
    assert not running.stop()


def test_a_replica_stopped_without_a_sandbox_takes_its_processes_along(
    bare_server: RunningServer, tmp_path: Path
) -> None:
    """D2 without a sandbox: a child in a session of its own and a double-forked daemon with
    an empty environment go with their replica when it scales to zero and at `app stop`."""
    briefly = ember.Function.from_name("faults", "detach_briefly").remote(str(tmp_path / "a"))
    assert all(alive(pid) for pid in briefly.values())
    wait_until(lambda: replica_count("faults", "detach_briefly") == 0)
    wait_until(lambda: not any(alive(pid) for pid in briefly.values()))

    left = ember.Function.from_name("faults", "detach").remote(str(tmp_path / "b"))
    assert all(alive(pid) for pid in left.values())
    assert ember_cli("app", "stop", "faults", env=bare_server.env()).returncode == 0
    wait_until(lambda: not any(alive(pid) for pid in left.values()))


def test_a_replica_killed_or_crashed_without_a_sandbox_takes_its_processes_along(
    bare_server: RunningServer, tmp_path: Path
) -> None:
    """D2 without a sandbox: a replica stuck past its timeout is SIGKILLed after its grace, and
    one that dies by itself; what they started in sessions of their own goes with them."""
    with pytest.raises(FunctionTimeoutError):
        ember.Function.from_name("faults", "detach_and_hang").remote(str(tmp_path / "hang"))
    pids = [int((tmp_path / "hang" / name).read_text()) for name in ("child", "daemon")]
    wait_until(lambda: not any(alive(pid) for pid in pids))

    with pytest.raises(ExecutionError, match="crashed"):
        ember.Function.from_name("faults", "detach_and_crash").remote(str(tmp_path / "crash"))
    child = int((tmp_path / "crash" / "child").read_text())
    wait_until(lambda: not alive(child))


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
