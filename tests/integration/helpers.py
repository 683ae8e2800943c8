"""Helpers for integration tests: load sample apps as `ember run` would, and read app state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ember import wire
from ember.cli.loader import import_file
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync

APPS = Path(__file__).parent.parent / "apps"


def load(name: str) -> ModuleType:
    return import_file(APPS / f"{name}.py")


def app_info(app_name: str) -> wire.AppInfo:
    data = run_sync(Client.from_settings().json("GET", f"/api/v1/apps/{app_name}"))
    return wire.AppInfo.model_validate(data)


def replica_count(app_name: str, function: str) -> int:
    info = app_info(app_name)
    return sum(sum(f.replicas.values()) for f in info.functions if f.name == function)


def ember_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ember.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def cli_json(*args: str, env: dict[str, str]) -> Any:
    result = ember_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def replica_pid(replica_id: str) -> int:
    """The host PID of a replica's process (its sandbox shows it another), found by its
    EMBER_REPLICA_ID."""
    marker = f"{wire.REPLICA_ID_ENV}={replica_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        program = Path(cmdline.split(b"\0")[0].decode()).name
        if marker in environ.split(b"\0") and program != "bwrap" and b"ember.runtime" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no process of replica {replica_id}")


def replicas_folder(path: Path) -> Path:
    """A new folder the test's replicas write in: a server run as root runs them as
    `ember-replica` (README: Security), which may not write in folders the test makes."""
    path.mkdir()
    path.chmod(0o1777)
    return path
