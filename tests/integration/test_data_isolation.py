"""Replicas cannot read the server's data, tested as an attacker would: a function of one app
looks for the data directory, the key file, the database, the admin config, and another app's
source and volume, from a fresh replica and from one forked from a template."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from tests.conftest import BACKEND, RunningServer, start_server
from tests.integration.helpers import ember_cli, load

SANDBOXED = shutil.which("bwrap") is not None and shutil.which("pasta") is not None
ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not SANDBOXED, reason="needs bubblewrap and passt")


def test_a_replica_sees_only_its_own_app_of_the_data_directory(
    server: RunningServer, tmp_path: Path
) -> None:
    home, env = server.home, server.env()
    victim_file, own_file = tmp_path / "secret.txt", tmp_path / "own.txt"
    victim_file.write_text("the victim's data")
    own_file.write_text("the snooper's own data")
    for command in (
        ("volume", "create", "victim-data"),
        ("volume", "put", "victim-data", str(victim_file), "/secret.txt"),
        ("volume", "create", "snooper-data"),
        ("volume", "put", "snooper-data", str(own_file), "/own.txt"),
    ):
        assert ember_cli(*command, env=env).returncode == 0
    load("hello").app.deploy()
    snooper = load("snooper")
    snooper.app.deploy()
    forbidden = [
        f"{home}/secret.key",
        f"{home}/ember.db",
        f"{home}/ember.db-wal",
        f"{home}/config.toml",
        f"{home}/apps/hello/v1/hello.py",
        f"{home}/apps/hello",
        f"{home}/volumes/victim-data/HEAD",
        f"{home}/volumes/victim-data/snapshots",
        f"{home}/shared-volumes/victim-data/HEAD",  # the Ray pass's servers keep volumes there
        f"/proc/{server.process.pid}/environ",
    ]
    listed = [str(home), f"{home}/apps", f"{home}/volumes"]

    asked = [*forbidden, "/data/own.txt", *listed]
    for found in (snooper.look.remote(asked), snooper.Forked().look.remote(asked)):
        paths = found["paths"]
        for path in forbidden:
            assert not paths[path].startswith(("read", "listed")), (path, paths[path])
        assert paths["/data/own.txt"] == "read: the snooper's own data"
        assert found["own_source"].startswith("read: ")
        for path in listed:  # the data directory holds only what this replica was given
            entries = set(paths[path].removeprefix("listed: ").split(","))
            assert not entries & {"ember.db", "secret.key", "config.toml", "hello", "victim-data"}
        if server.cluster is None:  # a Ray node's replicas see their node's folder instead
            assert paths[f"{home}/apps"] == "listed: snooper"
        assert "EMBER_HOME" not in found["env"]
        assert found["home_writable"] == "yes"
        if ROOT:  # the second wall: even outside its view, the replica's user is shut out
            assert found["uid"] == pwd.getpwnam("ember-replica").pw_uid
    info = home.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o700)


def test_a_server_that_cannot_isolate_apps_says_it_is_single_tenant(tmp_path: Path) -> None:
    running = start_server(tmp_path / "home", extra_args=["--no-sandbox"])
    try:
        startup = " ".join(running.log_path.read_text().split())
        assert "Apps are not isolated from each other (single-tenant mode)" in startup
        assert "--no-sandbox was given" in startup
    finally:
        running.stop()


@pytest.mark.skipif(BACKEND == "ray", reason="the Ray pass's servers keep volumes so already")
def test_volumes_kept_outside_the_data_directory_are_hidden_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--volumes-path` (a filesystem every node mounts) puts every app's volumes outside
    $EMBER_HOME: a replica still finds only its own there."""
    shared = tmp_path / "nfs"
    running = start_server(tmp_path / "home", extra_args=["--volumes-path", str(shared)])
    try:
        env = running.env()
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        victim_file = tmp_path / "secret.txt"
        victim_file.write_text("the victim's data")
        assert ember_cli("volume", "create", "victim-data", env=env).returncode == 0
        put = ("volume", "put", "victim-data", str(victim_file), "/secret.txt")
        assert ember_cli(*put, env=env).returncode == 0
        snooper = load("snooper")
        snooper.app.deploy()
        victim = [f"{shared}/victim-data/HEAD", f"{shared}/victim-data/snapshots"]
        paths = snooper.look.remote([str(shared), *victim])["paths"]
        assert paths[str(shared)] == "listed: .replicas,snooper-data"
        for path in victim:
            assert not paths[path].startswith(("read", "listed")), (path, paths[path])
    finally:
        assert not running.stop()
