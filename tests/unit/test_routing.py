"""Gateway.route and the deploy-time name checks: the server's own paths, and names by case."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ember import wire
from ember.server.api.auth import TokenCache
from ember.server.deployments import Deployment, check_names_ignoring_case
from ember.server.errors import ApiError
from ember.server.gateway.app import Endpoint, Gateway
from ember.server.settings import ServerSettings


def gateway(*apps: tuple[str, list[str]], domain: str | None = None) -> Gateway:
    deployments = [Deployment(name, 1, request(name, functions), None) for name, functions in apps]
    settings = ServerSettings(home=Path("/nonexistent"), domain=domain)
    plane = SimpleNamespace(settings=settings, deployments=SimpleNamespace(all=lambda: deployments))
    return Gateway(None, plane, TokenCache())  # type: ignore[arg-type]


def request(app: str, functions: list[str]) -> wire.DeployRequest:
    return wire.DeployRequest(
        app_name=app,
        declared_name="app",
        module="m",
        functions=[wire.FunctionSpec(name=f) for f in functions],
    )


def scope(path: str, host: str = "127.0.0.1:8765", query: bytes = b"") -> dict[str, object]:
    return {
        "type": "http",
        "path": path,
        "query_string": query,
        "headers": [(b"host", host.encode())],
    }


@pytest.mark.parametrize(
    "path",
    ["/", "/api/v1/apps", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
     "/metrics", "/dashboard", "/dashboard/apps/x", "/myapp", "/myapp/"],
)  # fmt: skip
def test_the_servers_own_paths_go_to_the_api(path: str) -> None:
    assert gateway().route(scope(path)) is None


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/docsite/api/hello", Endpoint("docsite", "api", "/hello")),
        ("/healthz-probe/api/", Endpoint("healthz-probe", "api", "/")),
        ("/metricsapp/fn", Endpoint("metricsapp", "fn", "/")),
        ("/openapi.json2/api/a/b", Endpoint("openapi.json2", "api", "/a/b")),
        ("/apis/f/x", Endpoint("apis", "f", "/x")),
    ],
)
def test_app_names_that_start_like_a_server_path_are_endpoints(
    path: str, endpoint: Endpoint
) -> None:
    assert gateway().route(scope(path)) == endpoint


def test_the_query_string_travels_with_the_target() -> None:
    routed = gateway().route(scope("/web/api/hello", query=b"name=x"))
    assert routed == Endpoint("web", "api", "/hello?name=x")


def test_a_lowercased_host_finds_the_app_and_function_as_deployed() -> None:
    routed = gateway(("CamelApp", ["Server"]), domain="ember.test").route(
        scope("/v1/models", host="CamelApp--server.ember.test:443")
    )
    assert routed == Endpoint("CamelApp", "Server", "/v1/models")


def test_an_unknown_host_is_passed_on_to_be_refused() -> None:
    routed = gateway(domain="ember.test").route(scope("/", host="nope--fn.ember.test"))
    assert routed == Endpoint("nope", "fn", "/")


def test_an_app_name_differing_only_in_case_is_refused() -> None:
    with pytest.raises(
        ApiError, match="'camelapp' differs only in case from the existing app 'CamelApp'"
    ):
        check_names_ignoring_case(request("camelapp", ["f"]), ["other", "CamelApp"])
    check_names_ignoring_case(request("CamelApp", ["f"]), ["CamelApp"])  # a new version


def test_function_names_differing_only_in_case_are_refused() -> None:
    with pytest.raises(ApiError, match="functions 'api' and 'API' differ only in case"):
        check_names_ignoring_case(request("web", ["api", "API"]), [])
