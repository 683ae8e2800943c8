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
    model = ensure_default_model(tmp_path_factory.mktemp("models"))
    # Replicas run as `ember-replica` where the server is root: they must read it (the folder
    # is made 0700, as a temporary folder, before it is renamed into place).
    for folder in (model.parent, model):
        folder.chmod(0o755)
    for entry in model.rglob("*"):
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    return model
