"""Integration tests hand replicas files under `tmp_path`: make those reachable for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def replicas_reach_tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server run as root runs its replicas as `ember-replica` (README: Security), and pytest
    makes its folders 0700: let that user pass them and write in the test's own folder."""
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for folder in (base.parent, base) if base.parent.name.startswith("pytest-of-") else (base,):
        folder.chmod(0o711)
    tmp_path.chmod(0o1777)
