"""The spec rules the SDK and the server share: each bad value is refused, naming field and rule."""

from __future__ import annotations

from typing import Any

import pytest

import ember
from ember import wire
from ember.sdk.exceptions import InvalidError
from ember.spec_checks import SpecError, check_deploy_request, check_function_spec


def spec(**fields: Any) -> wire.FunctionSpec:
    return wire.FunctionSpec(**{"name": "f", **fields})


def request(**fields: Any) -> wire.DeployRequest:
    base: dict[str, Any] = {
        "app_name": "a",
        "declared_name": "a",
        "module": "a_mod",
        "functions": [spec()],
    }
    return wire.DeployRequest(**{**base, **fields})


def test_a_spec_as_the_sdk_builds_it_passes() -> None:
    app = ember.App("fine")

    @app.function(
        image=ember.Image.debian_slim().env({"A": "1"}).workdir("/app"),
        schedule=ember.Cron("0 9 * * *"),
        retries=3,
        max_containers=2,
    )
    @ember.web_server(port=8000)
    def serve() -> None: ...

    check_function_spec(app.specs["serve"])
    check_deploy_request(request(functions=[app.specs["serve"]]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "function name '' must be a Python identifier"),
        ({"name": "a/b"}, "function name 'a/b' must be a Python identifier"),
        ({"name": "../../x"}, "must be a Python identifier"),
        ({"name": "x" * 10_000}, r"'xxx.*\.\.\. \(10000 characters\) must be a Python identifier"),
        ({"name": "f\0"}, "must be a Python identifier"),
        ({"methods": ["ok", "no way"]}, "method name 'no way'"),
        ({"max_containers": -5}, "max_containers >= 1; got .*max_containers=-5"),
        ({"max_containers": 0}, "max_containers >= 1"),
        ({"min_containers": -1}, "min_containers and buffer_containers must be >= 0"),
        ({"min_containers": 3, "max_containers": 2}, r"min_containers \(3\) cannot exceed"),
        ({"min_containers": 10**9}, "at most 1000"),
        ({"timeout": -1}, "timeout must be positive and at most 86400, got -1"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": float("inf")}, "timeout must be positive"),
        ({"scaledown_window": 0}, "scaledown_window must be positive"),
        ({"cpu": -2}, "cpu must be positive"),
        ({"retries": {"max_retries": 10**9}}, "retries must be between 0 and 10, got 1000000000"),
        ({"retries": {"max_retries": 1, "backoff_coefficient": 0.5}}, "backoff_coefficient"),
        ({"retries": {"max_retries": 1, "max_delay": 10**6}}, "max_delay must be between 0 and 60"),
        ({"max_inputs": 0}, "max_inputs must be between 1 and 1000"),
        ({"max_inputs": 10**6}, "max_inputs must be between 1 and 1000"),
        ({"max_inputs": 4, "target_inputs": 5}, "target_inputs must be between 1 and max_inputs"),
        ({"schedule": {"kind": "cron", "cron": "every day"}}, "malformed cron expression"),
        (
            {"schedule": {"kind": "cron", "cron": "* * * * *", "timezone": "Mars/Base"}},
            "unknown timezone 'Mars/Base'",
        ),
        ({"schedule": {"kind": "period", "seconds": -1}}, "Period's interval must be positive"),
        ({"schedule": {"kind": "period"}}, "needs its interval"),
        ({"is_class": True, "schedule": {"kind": "period", "seconds": 1}}, "not to classes"),
        ({"web": {"kind": "web_server", "port": 70000}}, "port must be between 1 and 65535"),
        ({"web": {"kind": "web_server"}}, "port must be between 1 and 65535, got None"),
        ({"web": {"kind": "fastapi", "method": "GET /x"}}, "not an HTTP method"),
        ({"secrets": ["../secret.key"]}, "invalid secret name '../secret.key'"),
        ({"secrets": ["a\nb"]}, r"invalid secret name 'a\\nb'"),
        ({"volumes": {"/data": "../other"}}, "invalid volume name '../other'"),
    ],
)
def test_bad_function_specs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_function_spec(spec(**fields))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"module": "os; rm -rf /"}, "is not a Python module name"),
        ({"files": {"../x.py": ""}}, "source path '../x.py' must be a relative path"),
        ({"files": {"/etc/x.py": ""}}, "must be a relative path"),
        ({"files": {"a//b.py": ""}}, "must be a relative path"),
        ({"files": {"d/" + "x" * 300 + ".py": ""}}, "must be a relative path"),
        ({"create_volumes": ["a/b"]}, "invalid volume name 'a/b'"),
        ({"inline_secrets": {"a\0": {"K": "v"}}}, "invalid secret name"),
        ({"inline_secrets": {"s": {"NOT A NAME": "v"}}}, "not an environment variable name"),
        ({"inline_secrets": {"s": {"K": "v\0"}}}, "contains a NUL character"),
        (
            {"functions": [spec(name="ok"), spec(name="bad", timeout=-1)]},
            "function 'bad': timeout must be positive",
        ),
    ],
)
def test_bad_deploy_requests(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_deploy_request(request(**fields))


def test_the_sdk_applies_the_same_rules_at_decoration_time() -> None:
    app = ember.App("sdk")

    def f() -> None: ...

    with pytest.raises(InvalidError, match="timeout must be positive"):
        app.function(timeout=-1)(f)
    with pytest.raises(InvalidError, match="max_inputs must be between 1 and 1000"):
        app.function(max_inputs=5000)(f)
    with pytest.raises(InvalidError, match="invalid secret name"):
        app.function(secrets=[ember.Secret.from_name("bad/name")])(f)
    with pytest.raises(InvalidError, match="function name '<lambda>' must be a Python identifier"):
        app.function()(lambda: None)
    with pytest.raises(InvalidError, match="max_containers: Input should be a valid integer"):
        app.function(max_containers="many")(f)
