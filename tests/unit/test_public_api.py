"""The public surface of `import ember` (Modal's names) is exactly this list."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ember

EXPECTED = [
    "App",
    "Cls",
    "Cron",
    "Error",
    "Function",
    "FunctionCall",
    "Image",
    "Period",
    "Retries",
    "Secret",
    "Volume",
    "__version__",
    "asgi_app",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "method",
    "parameter",
    "web_server",
    "wsgi_app",
    # Ember's own, for parking replicas (Modal has no such hooks):
    "after_restore",
    "before_park",
]


def test_all_is_the_documented_surface() -> None:
    assert sorted(ember.__all__) == sorted(EXPECTED)
    for name in ember.__all__:
        assert hasattr(ember, name)


def test_removed_names_explain_themselves() -> None:
    with pytest.raises(AttributeError, match=r"use `ember.App`"):
        ember.Stub  # noqa: B018


def test_a_replica_imports_nothing_it_does_not_need() -> None:
    """httpx, croniter and rich cost a replica's start time; a replica that never calls the server
    or reads a schedule must not pay for them."""
    check = (
        "import sys, ember.runtime.replica, ember.runtime.template; "
        "print(sorted(m for m in ('httpx', 'croniter', 'rich') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
