"""What the benchmarks share: a private server with one app deployed, and percentiles."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import RunningServer, start_server  # the test suite's server starter


@contextlib.contextmanager
def deployed(app_file: str) -> Iterator[tuple[RunningServer, ModuleType]]:
    """A fresh `ember server` in a temporary home with `bench/<app_file>` deployed."""
    with tempfile.TemporaryDirectory() as home:
        server = start_server(Path(home))
        os.environ.update(server.env())
        from ember.cli.loader import import_file

        module = import_file(Path(__file__).parent / app_file)
        try:
            module.app.deploy()
            yield server, module
        finally:
            server.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    return f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
