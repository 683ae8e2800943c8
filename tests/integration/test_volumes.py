"""Volumes: real files across replicas, commits that survive crashes, the CLI, deploy errors."""

from __future__ import annotations

import io
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.sdk.exceptions import AlreadyExistsError, ExecutionError, PathNotFoundError
from tests.conftest import BACKEND, RunningServer, start_server, wait_until
from tests.integration.helpers import cli_json, ember_cli, load, replica_pid


@pytest.fixture
def mounted_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    """A server whose replicas (and this process) read tests/apps/volumes.py's mount path; on
    EMBER_TEST_BACKEND's backend (on Ray: the shared-filesystem driver)."""
    monkeypatch.setenv("EMBER_TEST_VOLUME_MOUNT", str(tmp_path / "mnt" / "data"))
    cluster = request.getfixturevalue("ray_cluster") if BACKEND == "ray" else None
    running = start_server(tmp_path / "home", cluster=cluster)
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    yield running
    assert not running.stop(), "replica processes outlived the server"


def test_replicas_see_commits_after_reload(mounted_server: RunningServer) -> None:
    home = mounted_server.home
    module = load("volumes")
    module.app.deploy()  # creates "shared-data" (create_if_missing=True)
    assert [v["name"] for v in cli_json("volume", "list", env=mounted_server.env())] == [
        "shared-data"
    ]
    write, read, vol = module.write, module.read, module.vol

    # Writer and reader mount the volume at the same path, each seeing its own copy.
    writer = write.remote("a.txt", "one", commit=False)
    assert read.remote("a.txt") is None  # an uncommitted write is not seen
    assert write.remote("a.txt", "one") == writer
    assert read.remote("a.txt") is None  # committed, but the reader has not reloaded
    assert read.remote("a.txt", reload=True) == "one"
    assert [(e.path, e.size) for e in vol.listdir("/")] == [("a.txt", 3)]
    assert b"".join(vol.read_file("/a.txt")) == b"one"

    # A replica killed with writes it never committed leaves the last committed state.
    write.remote("a.txt", "lost", commit=False)
    os.kill(replica_pid(writer), signal.SIGKILL)
    assert read.remote("a.txt", reload=True) == "one"

    # So does one killed inside commit(): while flushing its snapshot, or just before HEAD.
    for where in ("fsync", "head"):
        with pytest.raises(ExecutionError, match="crashed"):
            module.crash_in_commit.remote("a.txt", "torn", where)
        assert read.remote("a.txt", reload=True) == "one"
    volumes = home / ("shared-volumes" if mounted_server.cluster else "volumes")
    volume_dir = volumes / "shared-data"
    assert list((volume_dir / "staging").iterdir())  # the "fsync" crash's half-built tree
    write.remote("b/c.txt", "two")
    assert not list((volume_dir / "staging").iterdir())  # cleaned by the next commit
    assert len(list((volume_dir / "snapshots").iterdir())) == 2  # HEAD and the one before

    # Uploads from outside are one commit too, seen by replicas after reload().
    local = mounted_server.home.parent / "local.txt"
    local.write_text("from my laptop")
    with vol.batch_upload() as batch:
        batch.put_file(local, "/up/local.txt")
        batch.put_file(io.BytesIO(b"in memory"), "up/memory.bin")
    assert read.remote("up/local.txt", reload=True) == "from my laptop"
    with pytest.raises(AlreadyExistsError, match="pass force=True"), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"again"), "up/memory.bin")
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"replaced"), "up/memory.bin")
    assert b"".join(vol.read_file("up/memory.bin")) == b"replaced"
    vol.remove_file("up", recursive=True)
    assert read.remote("up/local.txt", reload=True) is None
    assert sorted(e.path for e in vol.listdir("/", recursive=True)) == ["a.txt", "b", "b/c.txt"]
    with pytest.raises(PathNotFoundError) as missing:
        b"".join(vol.read_file("nope.txt"))
    assert isinstance(missing.value, FileNotFoundError)  # as Modal raises

    # Stopped replicas leave no working copies behind.
    assert ember_cli("app", "stop", "volumes", env=mounted_server.env()).returncode == 0
    # (on a Ray node, the shared driver keeps them on the node's disk, in the node's folder that
    # every server of the test session shares: look for this server's replicas only)
    copies = (
        mounted_server.cluster.root / "node" / "volumes" if mounted_server.cluster else volumes
    ) / ".replicas"
    ours = set(re.findall(r"replica (r-\w+) of volumes\.", mounted_server.log_path.read_text()))
    assert ours
    wait_until(lambda: not ours & {p.name for p in copies.iterdir()}, timeout=60)


def test_cli_round_trip(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = server.env()
    assert ember_cli("volume", "create", "data", env=env).returncode == 0
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # several chunks
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("bb")

    put = ember_cli("volume", "put", "data", str(big), "/models/", env=env)
    assert put.returncode == 0, put.stderr
    assert "Uploaded 1 file(s)" in put.stdout
    assert ember_cli("volume", "put", "data", str(folder), "/tree", env=env).returncode == 0
    again = ember_cli("volume", "put", "data", str(big), "/models/big.bin", env=env)
    assert again.returncode == 1
    assert "exists in the volume" in again.stderr
    assert (
        ember_cli(
            "volume", "put", "data", str(big), "/models/big.bin", "--force", env=env
        ).returncode
        == 0
    )

    listed = cli_json("volume", "ls", "data", "-r", env=env)
    assert {(e["path"], e["type"], e["size"]) for e in listed} == {
        ("models", "directory", 0),
        ("models/big.bin", "file", big.stat().st_size),
        ("tree", "directory", 0),
        ("tree/a.txt", "file", 1),
        ("tree/sub", "directory", 0),
        ("tree/sub/b.txt", "file", 2),
    }
    assert [e["path"] for e in cli_json("volume", "ls", "data", "tree", env=env)] == [
        "tree/a.txt",
        "tree/sub",
    ]

    out = tmp_path / "out"
    out.mkdir()
    got = ember_cli("volume", "get", "data", "/models/big.bin", str(out), env=env)
    assert got.returncode == 0, got.stderr
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    assert (
        ember_cli("volume", "get", "data", "/models/big.bin", str(out), env=env).returncode == 1
    )  # exists locally, no --force
    assert ember_cli("volume", "get", "data", "tree", str(out), env=env).returncode == 0
    assert (out / "tree" / "sub" / "b.txt").read_text() == "bb"
    assert ember_cli("volume", "get", "data", "tree/a.txt", "-", env=env).stdout == "a"

    refused = ember_cli("volume", "rm", "data", "tree", env=env)
    assert "is a directory" in refused.stderr
    assert ember_cli("volume", "rm", "data", "tree", "-r", env=env).returncode == 0
    assert ember_cli("volume", "rm", "data", "models/big.bin", env=env).returncode == 0
    assert [e["path"] for e in cli_json("volume", "ls", "data", env=env)] == ["models"]

    for args, message in (
        (("ls", "data", "../etc"), "contains '..'"),
        (("ls", "data", "gone"), "'gone' does not exist in volume 'data'"),
        (("ls", "nope"), "ember volume create nope"),
        (("create", "bad/name"), "invalid volume name"),
        (("create", "data"), "exists already"),
    ):
        result = ember_cli("volume", *args, env=env)
        assert result.returncode == 1
        assert message in " ".join(result.stderr.split()), result.stderr

    assert ember_cli("volume", "delete", "data", "--yes", env=env).returncode == 0
    assert cli_json("volume", "list", env=env) == []
    assert not (server.home / "volumes" / "data").exists()


BAD_MOUNT_APP = """
import ember
app = ember.App("mounty")
vol = ember.Volume.from_name({volume!r})

@app.function(volumes={{{path!r}: vol}})
def f() -> int:
    return 1
"""


def test_deploy_refuses_unknown_volumes_and_bad_mount_paths(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = server.env()
    source = tmp_path / "mounty.py"
    ember_cli("volume", "create", "known", env=env)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    cases = [
        (
            "nope",
            tmp_path / "mnt",
            "mounts volume 'nope', which does not exist; create it with `ember volume create nope`",
        ),
        ("known", tmp_path / "a-file" / "mnt", "cannot create the folder"),
        ("known", tmp_path / "a-folder", "already exists as a folder"),
        ("known", Path("/proc/mnt"), "inside the system folder /proc"),
    ]
    for volume, path, message in cases:
        source.write_text(BAD_MOUNT_APP.format(volume=volume, path=str(path)))
        result = ember_cli("deploy", str(source), env=env)
        assert result.returncode == 1
        assert message in " ".join(result.stderr.split()), result.stderr
    assert cli_json("app", "list", env=env) == []  # never half-deployed
    assert [v["name"] for v in cli_json("volume", "list", env=env)] == ["known"]

    source.write_text(BAD_MOUNT_APP.format(volume="known", path=str(tmp_path / "ok" / "mnt")))
    deployed = ember_cli("deploy", str(source), env=env)
    assert deployed.returncode == 0, deployed.stderr
    assert os.readlink(tmp_path / "ok" / "mnt").startswith("/proc/self/fd/")
