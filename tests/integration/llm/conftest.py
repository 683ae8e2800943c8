"""The default model, converted once per test session and shared by the LLM tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.llm.models import ensure_default_model


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    from tests.integration.llm.test_llm_serve import OPEN_CLIENTS

    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("models"))
