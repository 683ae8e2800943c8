"""GPU placement and replica environments, on a server with declared GPUs (`--gpus H100:4`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember import wire
from ember.sdk.exceptions import InvalidError
from tests.conftest import RunningServer, start_server, wait_until
from tests.integration.helpers import app_info, load, replicas_folder


@pytest.fixture
def gpu_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """A server that believes it has four H100s, with a secret key in its environment."""
    running = start_server(
        tmp_path / "home",
        extra_args=["--gpus", "H100:4"],
        extra_env={
            "EMBER_SECRET_KEY": "dGhpcyBpcyBub3QgYSByZWFsIGtleSEhISEhISEhISE=",
            "UNRELATED_SERVER_VARIABLE": "x",
        },
    )
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    yield running
    assert not running.stop()


def function_info(app: str, function: str) -> wire.FunctionInfo:
    return next(f for f in app_info(app).functions if f.name == function)


def test_demand_beyond_the_gpus_waits_for_them(gpu_server: RunningServer, tmp_path: Path) -> None:
    gpus = load("gpus")
    gpus.app.deploy()
    folder, release = replicas_folder(tmp_path / "seen"), tmp_path / "release"
    calls = [gpus.hold.spawn(str(folder), str(release)) for _ in range(6)]
    wait_until(lambda: len(list(folder.iterdir())) == 4, timeout=60)
    info = wait_until(lambda: (f := function_info("gpus", "hold")).replicas.get("pending") and f)
    assert info.replicas == {"ready": 4, "pending": 2}
    assert info.queued == 2 and info.resources == "gpu H100"
    seen = sorted(path.read_text() for path in folder.iterdir())
    assert seen == ["0", "1", "2", "3"]  # one GPU each, all different
    release.touch()
    results = [call.get(timeout=60) for call in calls]
    assert sorted(set(results)) == ["0", "1", "2", "3"]  # the last two ran once GPUs were free
    assert len(list(folder.iterdir())) == 4  # on the same four replicas: no fifth was started


def test_a_fallback_list_takes_the_type_present(gpu_server: RunningServer) -> None:
    gpus = load("gpus")
    gpus.app.deploy()
    assert gpus.devices.remote() == "0"


def test_a_gpu_the_host_lacks_fails_the_deploy(gpu_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "t4.py"
    source.write_text(
        "import ember\napp = ember.App('t4')\n@app.function(gpu='T4')\ndef f():\n    return 1\n"
    )
    from ember.cli.loader import import_file

    with pytest.raises(InvalidError, match=r"this host has 4 x H100 \(0, 1, 2, 3\)"):
        import_file(source).app.deploy()


def test_with_cpu_fallback_it_runs_on_the_cpu_and_the_deploy_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    running = start_server(
        tmp_path / "home", extra_args=["--gpus", "none", "--gpu-fallback", "cpu"]
    )
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    try:
        gpus = load("gpus")
        gpus.app.deploy()
        assert "it runs on the CPU" in capfd.readouterr().err
        assert gpus.devices.remote() == ""
    finally:
        assert not running.stop()


def test_a_replica_sees_nothing_of_the_servers_environment(gpu_server: RunningServer) -> None:
    gpus = load("gpus")
    gpus.app.deploy()
    env = gpus.environment.remote()
    assert "EMBER_SECRET_KEY" not in env and "UNRELATED_SERVER_VARIABLE" not in env
    assert "EMBER_HOME" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # asked for no GPU: sees none
    assert env["EMBER_REPLICA_ID"].startswith("r-")
