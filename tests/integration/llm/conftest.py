"""The default model, converted once per test session and shared by the LLM tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.llm.models import ensure_default_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("models"))
