"""Integration tests hand replicas files under `tmp_path`: make those reachable for them."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# As root, this session's temporary folders go in a root of its own: see pytest_configure.
_OWN_TEMPROOT = Path(tempfile.gettempdir(), "ember-tests", str(os.getpid()))


def pytest_configure(config: pytest.Config) -> None:
    """A server run as root runs its replicas as `ember-replica` (README: Security), which
    must pass through pytest's folders to reach the files a test hands them. pytest shares
    `/tmp/pytest-of-root` between sessions and closes it (0700) whenever one starts, so a
    replica of this session could lose its way mid-test while another session starts (a
    colleague's, on a shared machine): this session's folders live under a root of its own."""
    if os.geteuid() != 0 or "PYTEST_DEBUG_TEMPROOT" in os.environ or config.option.basetemp:
        return
    _OWN_TEMPROOT.mkdir(parents=True, exist_ok=True)
    for folder in (_OWN_TEMPROOT.parent, _OWN_TEMPROOT):
        folder.chmod(0o711)
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(_OWN_TEMPROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's folders go when it passed; a failed one's stay to be looked at."""
    if exitstatus == 0 and os.environ.get("PYTEST_DEBUG_TEMPROOT") == str(_OWN_TEMPROOT):
        shutil.rmtree(_OWN_TEMPROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def replicas_reach_tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Let `ember-replica` pass pytest's folders (made 0700) and write in the test's own."""
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for folder in (base.parent, base) if base.parent.name.startswith("pytest-of-") else (base,):
        folder.chmod(0o711)
    tmp_path.chmod(0o1777)
