"""The metrics a replica serves to the server, from the provider its code registers.

    from ember.runtime.metrics import provide_metrics

    provide_metrics(registry_text)                    # a function that returns Prometheus text
    provide_metrics("http://127.0.0.1:8000/metrics")  # or a URL this replica reaches (vLLM's)

Call it in an `@ember.enter` hook. The server asks every ready replica for `/__ember/metrics`
every few seconds and re-exports what it gets at its own `/metrics`, with the labels app and
function, summed over the function's replicas (ember/server/replica_metrics.py). One provider
per replica: a second call replaces the first.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

Provider = Callable[[], bytes | str]
TIMEOUT = 2.0

_provider: Provider | None = None


def provide_metrics(source: Provider | str) -> None:
    """Serve `source` (a function returning Prometheus text, or a URL to read it from)."""
    global _provider
    if isinstance(source, str):
        url = source
        _provider = lambda: _fetch(url)  # noqa: E731
    elif callable(source):
        _provider = source
    else:
        raise TypeError(f"provide_metrics takes a function or a URL, not {type(source).__name__}")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
    return body


def read_metrics() -> bytes | None:
    """The provider's text now, or None without one (blocking: call it in a thread)."""
    if _provider is None:
        return None
    text = _provider()
    return text.encode() if isinstance(text, str) else text
