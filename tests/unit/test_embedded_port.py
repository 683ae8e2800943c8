"""Where `ember llm serve` puts its embedded server: the same port at every start."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.cli.llm import _embedded_port
from ember.sdk.config import ClientSettings


def configured(url: str | None) -> ClientSettings:
    return ClientSettings(server_url=url, token="t" if url else None, home=Path("/nonexistent"))


@pytest.mark.parametrize(
    ("url", "port", "expected"),
    [
        (None, None, (8765, True)),  # a fresh home
        ("http://127.0.0.1:9000", None, (9000, True)),  # an earlier start, or `ember server --port`
        ("https://localhost:9443", None, (9443, True)),
        ("http://127.0.0.1:9000", 9100, (9100, True)),  # --port wins
        ("http://gpu-box:8765", None, (8765, False)),  # another machine's: its config is kept
    ],
)
def test_the_port_and_whether_the_client_config_is_written(
    url: str | None, port: int | None, expected: tuple[int, bool]
) -> None:
    assert _embedded_port(configured(url), port) == expected
