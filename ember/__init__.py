"""Ember: a self-hosted serverless GPU platform with Modal's API (`import ember as modal`)."""

from __future__ import annotations

from typing import Any

from ember.sdk import exceptions as exception
from ember.sdk.app import App
from ember.sdk.cls import Cls
from ember.sdk.decorators import (
    after_restore,
    asgi_app,
    before_park,
    concurrent,
    enter,
    exit,
    fastapi_endpoint,
    method,
    parameter,
    web_server,
    wsgi_app,
)
from ember.sdk.exceptions import Error
from ember.sdk.function import Function, FunctionCall
from ember.sdk.image import Image
from ember.sdk.options import Retries
from ember.sdk.schedule import Cron, Period
from ember.sdk.secret import Secret
from ember.sdk.volume import Volume
from ember.version import __version__

__all__ = [
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
    "after_restore",
    "asgi_app",
    "before_park",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "method",
    "parameter",
    "web_server",
    "wsgi_app",
]

_REMOVED = {
    "Stub": "`ember.Stub` is Modal's old name; use `ember.App`",
    "web_endpoint": "`web_endpoint` was renamed; use `@ember.fastapi_endpoint()`",
}


def __getattr__(name: str) -> Any:
    if name in _REMOVED:
        raise AttributeError(_REMOVED[name])
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
