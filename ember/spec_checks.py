"""The rules a FunctionSpec and a DeployRequest follow: checked by the SDK as it builds them, and
again by the server on deploy, since anyone with a token can send any JSON.

Each failure is a SpecError whose message names the field and the rule. Two rules live elsewhere:
`gpu` (the SDK's pattern in sdk/options.py, until a resource parser replaces it on both sides)
and volume mount paths (ember/runtime/mounts.py, which the SDK and the server's
`Volumes.check_deploy` apply).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ember import wire
from ember.image_spec import ImageSpecError, check_image_spec
from ember.names import MAX_PART, MAX_PATH, InvalidName, check_name, fits_filesystem, shown

MAX_TIMEOUT = 24 * 3600.0  # seconds, as Modal
MAX_RETRIES = 10
MAX_INPUTS = 1000  # concurrent inputs of one replica
MAX_WARM = 1000  # min_containers and buffer_containers
MAX_FUNCTION_NAME = 64
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
HTTP_METHOD = re.compile(r"[A-Z]{1,16}")


class SpecError(ValueError):
    """A spec that cannot work; the message names the field and the rule."""


def check_function_spec(spec: wire.FunctionSpec) -> None:
    """Refuse a spec the platform cannot run as asked."""
    _check_callable_name("function", spec.name)
    for method in spec.methods:
        _check_callable_name("method", method)
    _check_limits(spec)
    _check_scaling(spec)
    if spec.schedule is not None:
        if spec.is_class:
            raise SpecError("schedule= applies to @app.function, not to classes")
        _check_schedule(spec.schedule)
    if spec.web is not None:
        _check_web(spec.web)
    try:
        for secret in spec.secrets:
            check_name("secret", secret)
        for volume in spec.volumes.values():
            check_name("volume", volume)
        if spec.image is not None:
            check_image_spec(spec.image)
    except (InvalidName, ImageSpecError) as exc:
        raise SpecError(str(exc)) from None


def check_deploy_request(request: wire.DeployRequest) -> None:
    """Every function's spec, plus what the request itself carries: module, sources, inline
    secrets and volumes to create. Errors name the function they concern."""
    for spec in request.functions:
        try:
            check_function_spec(spec)
        except SpecError as exc:
            raise SpecError(f"function {shown(spec.name)}: {exc}") from None
    if not MODULE.fullmatch(request.module) or len(request.module) > MAX_PART:
        raise SpecError(f"module {shown(request.module)} is not a Python module name")
    for path in request.files:
        _check_source_path(path)
    try:
        for name in request.create_volumes:
            check_name("volume", name)
    except InvalidName as exc:
        raise SpecError(str(exc)) from None
    for name, values in request.inline_secrets.items():
        check_secret(name, values)


def check_secret(name: str, values: Mapping[str, str]) -> None:
    """A secret's name follows the name rule, its keys are environment variable names, and its
    values can be put in an environment (no NUL)."""
    try:
        check_name("secret", name)
    except InvalidName as exc:
        raise SpecError(str(exc)) from None
    if not values:
        raise SpecError(f"secret {name!r} has no values; give KEY=VALUE pairs")
    for key, value in values.items():
        if not key.isidentifier():
            raise SpecError(
                f"secret {name!r}: key {shown(key)} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if "\0" in value:
            raise SpecError(f"secret {name!r}: the value of {key} contains a NUL character")


def _check_callable_name(kind: str, name: str) -> None:
    if not name.isidentifier() or len(name) > MAX_FUNCTION_NAME:
        raise SpecError(
            f"{kind} name {shown(name)} must be a Python identifier (the name of a def or "
            f"class) of at most {MAX_FUNCTION_NAME} characters"
        )


def _positive(name: str, value: float | None, at_most: float = math.inf) -> None:
    if value is not None and not (0 < value <= at_most and math.isfinite(value)):
        limit = f" and at most {at_most:g}" if math.isfinite(at_most) else ""
        raise SpecError(f"{name} must be positive{limit}, got {value!r}")


def _check_limits(spec: wire.FunctionSpec) -> None:
    _positive("timeout", spec.timeout, MAX_TIMEOUT)
    _positive("scaledown_window", spec.scaledown_window)
    _positive("cpu", spec.cpu)
    _positive("memory", spec.memory)
    retries = spec.retries
    if not 0 <= retries.max_retries <= MAX_RETRIES:
        raise SpecError(f"retries must be between 0 and {MAX_RETRIES}, got {retries.max_retries}")
    if not 1.0 <= retries.backoff_coefficient <= 10.0:
        raise SpecError("retries: backoff_coefficient must be between 1 and 10")
    if not 0.0 <= retries.initial_delay <= 60.0 or not 0.0 < retries.max_delay <= 60.0:
        raise SpecError("retries: initial_delay and max_delay must be between 0 and 60 s")


def _check_scaling(spec: wire.FunctionSpec) -> None:
    low, high, buffer = spec.min_containers, spec.max_containers, spec.buffer_containers
    if low < 0 or buffer < 0 or (high is not None and high < 1):
        raise SpecError(
            "min_containers and buffer_containers must be >= 0, max_containers >= 1; got "
            f"min_containers={low}, buffer_containers={buffer}, max_containers={high}"
        )
    if low > MAX_WARM or buffer > MAX_WARM:
        raise SpecError(f"min_containers and buffer_containers must be at most {MAX_WARM}")
    if high is not None and low > high:
        raise SpecError(f"min_containers ({low}) cannot exceed max_containers ({high})")
    if not 1 <= spec.max_inputs <= MAX_INPUTS:
        raise SpecError(f"max_inputs must be between 1 and {MAX_INPUTS}, got {spec.max_inputs}")
    target = spec.target_inputs
    if target is not None and not 1 <= target <= spec.max_inputs:
        raise SpecError(f"target_inputs must be between 1 and max_inputs, got {target}")


def _check_schedule(schedule: wire.ScheduleSpec) -> None:
    if schedule.kind == "period":
        _positive("schedule: a Period's interval", schedule.seconds)
        if schedule.seconds is None:
            raise SpecError("schedule: a Period needs its interval in seconds")
        return
    from croniter import croniter  # here: every replica imports this module, few use cron

    if schedule.cron is None or not croniter.is_valid(schedule.cron):
        raise SpecError(
            f"schedule: malformed cron expression {shown(schedule.cron or '')}: expected five "
            "fields 'minute hour day-of-month month day-of-week', e.g. '0 9 * * *'"
        )
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            f"schedule: unknown timezone {shown(schedule.timezone)}; use an IANA name such as "
            "'UTC' or 'America/New_York'"
        ) from None


def _check_web(web: wire.WebEndpointSpec) -> None:
    if web.kind == "web_server" and (web.port is None or not 1 <= web.port <= 65535):
        raise SpecError(f"web_server port must be between 1 and 65535, got {web.port}")
    _positive("web endpoint startup_timeout", web.startup_timeout)
    if not HTTP_METHOD.fullmatch(web.method):
        raise SpecError(f"web endpoint method {shown(web.method)} is not an HTTP method")
    if web.label is not None:
        try:
            check_name("label", web.label)
        except InvalidName as exc:
            raise SpecError(str(exc)) from None


def _check_source_path(path: str) -> None:
    parts = PurePosixPath(path).parts
    if (
        not parts
        or str(PurePosixPath(path)) != path  # one spelling per file: no "a//b", "./a", "a/"
        or path.startswith("/")
        or ".." in parts
        or "\0" in path
        or "\\" in path
        or not fits_filesystem(path)
    ):
        raise SpecError(
            f"source path {shown(path)} must be a relative path inside the app, without '..', "
            f"of at most {MAX_PATH} bytes"
        )
