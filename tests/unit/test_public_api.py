"""The public surface of `import ember` (Modal's names) is exactly this list."""

from __future__ import annotations

import pytest

import ember

EXPECTED = [
    "App", "Cls", "Cron", "Error", "Function", "FunctionCall", "Image", "Period", "Retries",
    "Secret", "Volume",
    "__version__", "asgi_app", "concurrent", "enter", "exception", "exit", "fastapi_endpoint",
    "method", "parameter", "web_server", "wsgi_app",
]


def test_all_is_the_documented_surface() -> None:
    assert sorted(ember.__all__) == sorted(EXPECTED)
    for name in ember.__all__:
        assert hasattr(ember, name)


def test_removed_names_explain_themselves() -> None:
    with pytest.raises(AttributeError, match=r"use `ember.App`"):
        ember.Stub  # noqa: B018
