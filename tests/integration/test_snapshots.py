"""Cold starts in tiers on a real server: replicas forked from a template, replicas parked and
restored (on this CPU machine, parking runs the hooks and keeps the process: no CUDA driver).
On the Ray backend, which has no templates yet, only the parking tests run (test_ray.py checks
that its replicas start fresh)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ember import wire
from tests.conftest import BACKEND, RunningServer, descendants, wait_until
from tests.integration.helpers import app_info, ember_cli, load

templates_here = pytest.mark.skipif(
    BACKEND == "ray", reason="templates are not on the Ray backend yet"
)


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "marks"
    monkeypatch.setenv("EMBER_TEST_MARKS", str(path))
    path.touch()
    path.chmod(0o666)  # replicas append (as `ember-replica` where the server is root)
    return path


@pytest.fixture
def snapshots(server: RunningServer, marks: Path) -> Iterator[object]:
    module = load("snapshots")
    module.app.deploy()
    yield module


def pairs(marks: Path) -> list[tuple[str, str]]:
    return [(hook, replica) for hook, replica in map(str.split, marks.read_text().splitlines())]


def lines(marks: Path) -> list[str]:
    return [hook for hook, _ in pairs(marks)]  # the hook of each line, not the replica


def parking(marks: Path) -> list[str]:
    return [hook for hook in lines(marks) if hook in ("park", "restore")]  # not other templates'


def function(name: str) -> wire.FunctionInfo:
    return next(f for f in app_info("snapshots").functions if f.name == name)


@templates_here
def test_replicas_fork_from_one_template(snapshots, marks: Path) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: function("Forked").snapshot == "ready", timeout=60)
    forked = snapshots.Forked()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda key: forked.lookup.remote(key), [3, 4, 5]))
    assert [value for value, _ in answers] == [9, 16, 25]  # the template's table, in each fork
    assert lines(marks).count("snap") == 1  # once, in the template
    entered = [replica for hook, replica in pairs(marks) if hook == "enter"]
    assert len(entered) == len(set(entered))  # once per replica
    assert {replica for _, replica in answers} <= set(entered)
    cold_start = function("Forked").cold_start
    assert cold_start is not None and cold_start.tier == "fork" and "fork" in cold_start.phases


@templates_here
def test_a_snap_hook_that_initialises_cuda_is_refused(snapshots) -> None:  # type: ignore[no-untyped-def]
    snapshot = wait_until(lambda: (s := function("TouchesCuda").snapshot) != "building" and s)
    assert snapshot.startswith("failed:") and "TouchesCuda.load initialised CUDA" in snapshot
    assert snapshots.TouchesCuda().ping.remote() == "pong"  # started fresh instead
    assert function("TouchesCuda").cold_start.tier == "fresh"  # type: ignore[union-attr]


@templates_here
def test_a_template_that_fails_falls_back_to_fresh_starts(
    server: RunningServer, marks: Path
) -> None:  # type: ignore[no-untyped-def]
    fail = Path(str(marks) + ".fail")
    fail.touch()  # the snap hook raises while the template is built
    module = load("snapshots")
    module.app.deploy()
    snapshot = wait_until(lambda: (s := function("FailsInTemplate").snapshot) != "building" and s)
    assert "no weights in the template's folder" in snapshot
    logs = ember_cli("app", "logs", "snapshots", env=server.env()).stdout
    assert "Traceback" in logs and "RuntimeError: no weights" in logs
    fail.unlink()
    assert module.FailsInTemplate().ping.remote() == "pong"
    assert function("FailsInTemplate").cold_start.tier == "fresh"  # type: ignore[union-attr]


@templates_here
def test_redeploys_rebuild_templates_and_stopping_the_app_stops_them(
    server: RunningServer, snapshots, marks: Path
) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: function("Forked").snapshot == "ready", timeout=60)
    first = template_processes(server)
    assert first
    snapshots.app.deploy()
    wait_until(
        lambda: app_info("snapshots").version == 2 and function("Forked").snapshot == "ready",
        timeout=60,
    )
    # The old ones are gone.
    wait_until(lambda: not (set(first) & set(template_processes(server))), timeout=60)
    assert lines(marks).count("snap") == 2
    assert ember_cli("app", "stop", "snapshots", env=server.env()).returncode == 0
    wait_until(lambda: not template_processes(server), timeout=60)


def test_an_idle_replica_parks_and_a_call_restores_it(snapshots, marks: Path) -> None:  # type: ignore[no-untyped-def]
    parks = snapshots.Parks()
    awake, replica = parks.hello.remote()
    assert awake
    wait_until(lambda: function("Parks").replicas == {"parked": 1}, timeout=60)
    assert parking(marks) == ["park"]
    assert parks.hello.remote() == (True, replica)
    assert parking(marks) == ["park", "restore"]
    cold_start = function("Parks").cold_start
    assert cold_start is not None and cold_start.tier == "restore" and "wake" in cold_start.phases


def test_a_failed_restore_is_served_by_a_fresh_replica(snapshots, marks: Path) -> None:  # type: ignore[no-untyped-def]
    parks = snapshots.Parks()
    _, first = parks.hello.remote()
    wait_until(lambda: function("Parks").replicas == {"parked": 1}, timeout=60)
    Path(str(marks) + ".fail").touch()  # its wake hook raises
    awake, second = parks.hello.remote()
    assert awake and second != first
    assert function("Parks").cold_start.tier == "fresh"  # type: ignore[union-attr]


def template_processes(server: RunningServer) -> list[int]:
    """Host pids of the server's template processes (not their sandboxes, not the replicas they
    forked; not other servers' on this machine)."""
    found = []
    for pid in descendants(server.process.pid):
        entry = Path(f"/proc/{pid}")
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        program = Path(argv[0].decode()).name
        is_template = b"ember.runtime.template" in argv and program != "bwrap"
        if is_template and f"{wire.REPLICA_ID_ENV}=t-".encode() in environ:
            found.append(int(entry.name))
    return found


@templates_here
def test_a_replica_forked_after_torch_ran_in_the_template_runs_torch(server: RunningServer) -> None:
    module = load("forked_torch")
    module.app.deploy()
    wait_until(lambda: app_info("forked-torch").functions[0].snapshot == "ready", timeout=120)
    assert module.Weights().total.remote() == 16_000_000
    assert app_info("forked-torch").functions[0].cold_start.tier == "fork"  # type: ignore[union-attr]
