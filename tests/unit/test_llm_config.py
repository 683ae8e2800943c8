"""config.yaml for `ember llm serve`: known keys, flags over the file, errors listing valid keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.llm.config import ENV_VAR, ConfigError, LLMConfig, valid_keys


def test_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model:\n  name: /models/qwen\n  max_model_len: 4096\n"
        "service:\n  gpu: H100\n  n_gpu: 2\n  scaledown_window: 30\n  env: {HF_HOME: /cache}\n"
    )
    flags = {"model.name": "/models/llama", "engine": "vllm", "app_name": None}
    config = LLMConfig.load(path, flags)
    assert config.model.name == "/models/llama"  # the flag wins
    assert config.model.max_model_len == 4096
    assert config.engine == "vllm"
    assert config.gpu == "H100:2"
    assert config.served_model_name == "llama"
    assert config.service.min_containers == 0  # scale to zero by default


def test_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = LLMConfig.parse({"model": {"serve_name": "chat"}, "service": {"env": {"A": "1"}}}, "x")
    env = config.to_env()
    assert env["A"] == "1"
    monkeypatch.setenv(ENV_VAR, env[ENV_VAR])
    assert LLMConfig.from_env() == config


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  nmae: x\nservcie:\n  gpu: H100\n")
    with pytest.raises(ConfigError) as error:
        LLMConfig.load(path)
    message = str(error.value)
    assert "unknown key `model.nmae`" in message and "unknown key `servcie`" in message
    assert all(key in message for key in valid_keys())
    assert "service.max_concurrent_requests" in valid_keys()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model:\n  max_model_len: -1\n", "model.max_model_len"),
        ("engine: tgi\n", "engine"),
        ("- a list\n", "must hold a mapping"),
        ("model: [\n", "cannot read"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        LLMConfig.load(path)
