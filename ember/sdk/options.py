"""Validate the options of `@app.function` / `@app.cls` into a FunctionSpec.

The rules a spec's values follow live in ember/spec_checks.py, which the server applies again on
deploy; this module turns Python options into a spec and reports what is wrong at decoration
time. Options whose machinery lands later (gpu, snapshots) are validated and stored now, so apps
written today keep deploying as that machinery arrives.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ember import wire
from ember.resources import ResourceError, parse_gpu
from ember.runtime.mounts import check_mount_path
from ember.runtime.volumes import VolumeError
from ember.sdk.exceptions import InvalidError
from ember.sdk.schedule import Schedule
from ember.spec_checks import SpecError, check_function_spec

# Every option `@app.function` / `@app.cls` take, besides Modal's deprecated names below.
OPTIONS = frozenset({
    "image", "gpu", "cpu", "memory", "timeout", "retries", "secrets", "volumes",
    "min_containers", "max_containers", "buffer_containers", "scaledown_window",
    "enable_memory_snapshot", "gpu_snapshot", "experimental_options", "schedule", "max_inputs",
})  # fmt: skip
EXPERIMENTAL_OPTIONS = frozenset({"enable_gpu_snapshot"})

# Modal's older option names -> today's names.
DEPRECATED_OPTIONS = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
    "allow_concurrent_inputs": "max_inputs",
}


@dataclass(frozen=True)
class Retries:
    """Retry policy: `ember.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0)`."""

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0


def apply_deprecated(options: dict[str, Any], stacklevel: int = 4) -> dict[str, Any]:
    """Map Modal's old option names onto the new ones, warning once for each."""
    options = dict(options)
    for old, new in DEPRECATED_OPTIONS.items():
        if old not in options:
            continue
        value = options.pop(old)
        warnings.warn(
            f"`{old}` is deprecated; use `{new}` instead"
            + (" (or @ember.concurrent(max_inputs=...))" if new == "max_inputs" else ""),
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        if value is not None and options.get(new) is None:
            options[new] = value
    return options


def _retry_policy(retries: int | Retries | None) -> wire.RetryPolicy:
    if retries is None:
        return wire.RetryPolicy()
    if isinstance(retries, bool) or not isinstance(retries, int | Retries):
        raise InvalidError("retries must be an int or ember.Retries(max_retries=...)")
    if isinstance(retries, int):
        retries = Retries(max_retries=retries, initial_delay=0.0)
    return wire.RetryPolicy(
        max_retries=retries.max_retries,
        backoff_coefficient=retries.backoff_coefficient,
        initial_delay=retries.initial_delay,
        max_delay=retries.max_delay,
    )


def _named(objects: Any, what: str) -> list[str]:
    names = []
    for obj in objects or ():
        name = obj if isinstance(obj, str) else getattr(obj, "name", None)
        if not isinstance(name, str):
            raise InvalidError(f"{what} must be ember.{what.title()} objects, got {obj!r}")
        names.append(name)
    return names


def _mounts(volumes: dict[str, Any]) -> dict[str, str]:
    """Mount path (normalised) -> volume name."""
    mounts: dict[str, str] = {}
    for path, volume in volumes.items():
        try:
            mount = check_mount_path(str(path))
        except VolumeError as exc:
            raise InvalidError(str(exc)) from None
        if mount in mounts:
            raise InvalidError(f"two volumes are mounted at {mount!r}")
        mounts[mount] = _named([volume], "volumes")[0]
    return mounts


def build_spec(
    name: str,
    options: dict[str, Any],
    *,
    is_class: bool = False,
    methods: list[str] | None = None,
    web: wire.WebEndpointSpec | None = None,
    max_inputs: int | None = None,
    target_inputs: int | None = None,
) -> wire.FunctionSpec:
    """Check every option and return the spec the server stores."""
    o = options
    _check_types(o)
    if o.get("max_inputs") is not None:
        max_inputs = int(o["max_inputs"])
    image, schedule, gpu = o.get("image"), o.get("schedule"), o.get("gpu")
    fields = {
        "name": name,
        "is_class": is_class,
        "methods": methods or [],
        "web": web,
        "image": image.to_spec() if image is not None and hasattr(image, "to_spec") else None,
        "gpu": gpu,
        "cpu": o.get("cpu"),
        "memory": o.get("memory"),
        "timeout": _given(o, "timeout", 300.0),
        "retries": _retry_policy(o.get("retries")),
        "secrets": _named(o.get("secrets"), "secrets"),
        "volumes": _mounts(o.get("volumes") or {}),
        "min_containers": o.get("min_containers") or 0,
        "max_containers": o.get("max_containers"),
        "buffer_containers": o.get("buffer_containers") or 0,
        "scaledown_window": _given(o, "scaledown_window", 60.0),
        "enable_memory_snapshot": bool(o.get("enable_memory_snapshot")),
        "gpu_snapshot": _gpu_snapshot(o),
        "schedule": schedule.to_spec() if schedule else None,
        "max_inputs": max_inputs or 1,
        "target_inputs": target_inputs,
    }
    try:
        spec = wire.FunctionSpec(**fields)
        check_function_spec(spec)
    except (SpecError, ValidationError) as exc:
        raise InvalidError(_first_error(exc)) from None
    return spec


def _gpu_snapshot(o: dict[str, Any]) -> bool:
    """`gpu_snapshot=True`, or Modal's `experimental_options={"enable_gpu_snapshot": True}`."""
    experimental = o.get("experimental_options") or {}
    if not isinstance(experimental, dict):
        raise InvalidError(
            "experimental_options must be a dict, e.g. {'enable_gpu_snapshot': True}"
        )
    unknown = sorted(set(experimental) - EXPERIMENTAL_OPTIONS)
    if unknown:
        raise InvalidError(
            f"unknown experimental option {unknown[0]!r}; known: {', '.join(EXPERIMENTAL_OPTIONS)}"
        )
    return bool(o.get("gpu_snapshot") or experimental.get("enable_gpu_snapshot"))


def check_option_names(options: dict[str, Any]) -> None:
    """Refuse a misspelt option at once (it would otherwise do nothing, silently)."""
    for name in options:
        if name not in OPTIONS and name not in DEPRECATED_OPTIONS:
            close = difflib.get_close_matches(name, sorted(OPTIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidError(
                f"unknown option {name!r}{hint} Options: {', '.join(sorted(OPTIONS))}"
            )


def _check_types(o: dict[str, Any]) -> None:
    gpu = o.get("gpu")
    try:
        parse_gpu(gpu)
    except ResourceError as exc:
        raise InvalidError(str(exc)) from None
    schedule = o.get("schedule")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InvalidError("schedule must be ember.Cron(...) or ember.Period(...)")


def _first_error(exc: SpecError | ValidationError) -> str:
    if isinstance(exc, SpecError):
        return str(exc)
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}, got {error.get('input')!r}"


def _given(options: dict[str, Any], key: str, default: float) -> Any:
    """The option as given (0 included, so the rules can refuse it), or the default."""
    value = options.get(key)
    return default if value is None else value
