"""What `ember llm serve` deploys: model, engine and service, from config.yaml and flags.

The keys are the ones users know from vLLM-on-Modal deployments (`model.max_model_len`,
`service.scaledown_window`, ...). The resolved config travels to replicas as one JSON environment
variable of the app's image, so the app module reads the same config on both sides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ember.llm.models import DEFAULT_MODEL, split_volume_model

ENV_VAR = "EMBER_LLM_CONFIG"
VOLUME_MOUNTS = "/models"  # a model kept in Volume NAME is mounted at /models/NAME


class ConfigError(Exception):
    """A config file or flag that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = DEFAULT_MODEL  # a local Hugging Face folder, or the default model
    serve_name: str | None = None  # the `model` clients send; the folder's name by default
    max_model_len: int = Field(default=2048, ge=16)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)


class ServiceSection(_Section):
    gpu: str | None = None  # e.g. "H100"; stored for scheduling, the engine uses CUDA when present
    n_gpu: int = Field(default=1, ge=1)
    fast_boot: bool = False  # no CUDA graphs: built-in engine decodes eagerly, vLLM starts sooner
    scaledown_window: float = Field(default=300.0, gt=0)
    min_containers: int = Field(default=0, ge=0)  # 0: scale to zero when idle
    max_concurrent_requests: int = Field(default=32, ge=1)
    memory_snapshot: bool = True  # replicas fork from a process that loaded the model once
    gpu_snapshot: bool | None = None  # park idle replicas, not stop them; default: on a GPU
    env: dict[str, str] = Field(default_factory=dict)


class LLMConfig(_Section):
    app_name: str = "llm"
    engine: Literal["builtin", "vllm"] = "builtin"
    model: ModelSection = Field(default_factory=lambda: ModelSection())
    service: ServiceSection = Field(default_factory=lambda: ServiceSection())

    @property
    def served_model_name(self) -> str:
        return self.model.serve_name or Path(self.model.name).name

    @property
    def model_volume(self) -> tuple[str, str] | None:
        """(volume, mount path) when the model is kept in a Volume."""
        parts = split_volume_model(self.model.name)
        return (parts[0], f"{VOLUME_MOUNTS}/{parts[0]}") if parts else None

    @property
    def model_path(self) -> str:
        """The folder engines load, as a replica sees it."""
        parts = split_volume_model(self.model.name)
        return f"{VOLUME_MOUNTS}/{parts[0]}/{parts[1]}" if parts else self.model.name

    @property
    def gpu(self) -> str | None:
        """The function's `gpu=` option: "H100", or "H100:2" for several."""
        if self.service.gpu is None:
            return None
        return (
            self.service.gpu
            if self.service.n_gpu == 1
            else f"{self.service.gpu}:{self.service.n_gpu}"
        )

    @property
    def parks(self) -> bool:
        """Whether idle replicas are parked (engine asleep, GPU checkpointed) past the window."""
        if self.service.gpu_snapshot is None:
            return self.service.gpu is not None
        return self.service.gpu_snapshot

    @classmethod
    def load(cls, path: Path | None = None, overrides: dict[str, Any] | None = None) -> LLMConfig:
        """Read `path` (YAML) if given, then apply the flags that were set (dotted keys)."""
        data: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"cannot read {path}: {e}") from None
            if not isinstance(loaded, dict | None):
                raise ConfigError(f"{path} must hold a mapping with `model:` and `service:` keys")
            data = loaded or {}
        for key, value in (overrides or {}).items():
            if value is not None:
                section, _, field = key.rpartition(".")
                target = data.setdefault(section, {}) if section else data
                if not isinstance(target, dict):
                    raise ConfigError(f"{path}: `{section}` must be a mapping")
                target[field] = value
        return cls.parse(data, source=str(path or "the flags"))

    @classmethod
    def parse(cls, data: dict[str, Any], source: str) -> LLMConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_explain(e, source)) from None

    @classmethod
    def from_env(cls) -> LLMConfig:
        """The config `ember llm serve` resolved, or the defaults when the app is deployed as is."""
        raw = os.environ.get(ENV_VAR)
        return cls.model_validate_json(raw) if raw else cls()

    def to_env(self) -> dict[str, str]:
        return {**self.service.env, ENV_VAR: self.model_dump_json()}


def valid_keys() -> list[str]:
    keys = [name for name, f in LLMConfig.model_fields.items() if name not in ("model", "service")]
    for section, model in (("model", ModelSection), ("service", ServiceSection)):
        keys += [f"{section}.{name}" for name in model.model_fields]
    return keys


def _explain(error: ValidationError, source: str) -> str:
    problems = []
    unknown = False
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            unknown = True
            problems.append(f"unknown key `{key}`")
        else:
            problems.append(f"`{key}`: {item['msg']}")
    message = f"{source}: " + "; ".join(problems)
    if unknown:
        message += ". Valid keys: " + ", ".join(valid_keys())
    return message
