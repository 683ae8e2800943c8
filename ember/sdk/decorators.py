"""Method and function decorators: they only set flags that `@app.function` and `@app.cls` read.

@app.cls()
class Model:
    size: int = ember.parameter(default=1)

    @ember.enter(snap=True)
    def load(self): ...

    @ember.method()
    def predict(self, x): ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ember import wire
from ember.sdk.exceptions import InvalidError


@dataclasses.dataclass
class PartialFunction:
    """A user callable plus the flags stacked decorators put on it."""

    raw: Callable[..., Any]
    enter_snap: bool | None = None  # None: not an enter hook
    is_exit: bool = False
    park: str | None = None  # "before_park" or "after_restore"
    is_method: bool = False
    web: wire.WebEndpointSpec | None = None
    max_inputs: int | None = None
    target_inputs: int | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw(*args, **kwargs)


def as_partial(obj: Any) -> PartialFunction:
    return obj if isinstance(obj, PartialFunction) else PartialFunction(raw=obj)


def _flagger(decorator_name: str, **flags: Any) -> Callable[[Any], PartialFunction]:
    def apply(f: Any) -> PartialFunction:
        if isinstance(f, type):
            raise InvalidError(
                f"@ember.{decorator_name} decorates methods and functions, not classes"
            )
        if not callable(f):
            raise InvalidError(f"@ember.{decorator_name} needs a function, got {f!r}")
        partial = as_partial(f)
        for key, value in flags.items():
            setattr(partial, key, value)
        return partial

    return apply


def _with_optional_parens(name: str, f: Any, **flags: Any) -> Any:
    """Allow both `@ember.enter` and `@ember.enter()`."""
    if f is not None:
        return _flagger(name, **flags)(f)
    return _flagger(name, **flags)


def enter(f: Any = None, *, snap: bool = False) -> Any:
    """Run this method when a replica starts; `snap=True` hooks run before a memory snapshot."""
    return _with_optional_parens("enter", f, enter_snap=snap)


def exit(f: Any = None) -> Any:
    """Run this method when a replica stops (on SIGTERM, within the grace period)."""
    return _with_optional_parens("exit", f, is_exit=True)


def before_park(f: Any = None) -> Any:
    """Run this method before an idle replica is parked: give back GPU memory (move weights to
    host memory, free caches), so the replica's GPU state can be checkpointed small and fast."""
    return _with_optional_parens("before_park", f, park="before_park")


def after_restore(f: Any = None) -> Any:
    """Run this method when a parked replica is restored, before it takes inputs: undo what the
    `@ember.before_park` hook did."""
    return _with_optional_parens("after_restore", f, park="after_restore")


def method(f: Any = None) -> Any:
    """Expose this method of an `@app.cls` class for remote calls."""
    return _with_optional_parens("method", f, is_method=True)


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[Any], Any]:
    """Let one replica serve up to `max_inputs` inputs at once, scaling at `target_inputs`."""
    if max_inputs < 1:
        raise InvalidError("@ember.concurrent(max_inputs=...) must be at least 1")
    if target_inputs is not None and not 1 <= target_inputs <= max_inputs:
        raise InvalidError("@ember.concurrent(target_inputs=...) must be between 1 and max_inputs")

    def apply(obj: Any) -> Any:
        if isinstance(obj, type):
            obj.__ember_concurrency__ = (max_inputs, target_inputs)  # type: ignore[attr-defined]
            return obj
        partial = as_partial(obj)
        partial.max_inputs, partial.target_inputs = max_inputs, target_inputs
        return partial

    return apply


def _web(kind: str, *, requires_proxy_auth: bool, auth: bool | None, **fields: Any) -> Any:
    spec = wire.WebEndpointSpec(
        kind=kind,  # type: ignore[arg-type]
        requires_proxy_auth=requires_proxy_auth if auth is None else auth,
        **fields,
    )
    return _flagger(f"{kind} endpoint", web=spec)


def asgi_app(
    *, label: str | None = None, requires_proxy_auth: bool = False, auth: bool | None = None
) -> Any:
    """Serve the ASGI app this function returns."""
    return _web("asgi", label=label, requires_proxy_auth=requires_proxy_auth, auth=auth)


def wsgi_app(
    *, label: str | None = None, requires_proxy_auth: bool = False, auth: bool | None = None
) -> Any:
    """Serve the WSGI app this function returns."""
    return _web("wsgi", label=label, requires_proxy_auth=requires_proxy_auth, auth=auth)


def fastapi_endpoint(
    *,
    method: str = "GET",
    label: str | None = None,
    requires_proxy_auth: bool = False,
    auth: bool | None = None,
) -> Any:
    """Serve this function as a single FastAPI route."""
    return _web(
        "fastapi",
        method=method.upper(),
        label=label,
        requires_proxy_auth=requires_proxy_auth,
        auth=auth,
    )


def web_server(
    port: int,
    *,
    startup_timeout: float = 300.0,
    label: str | None = None,
    requires_proxy_auth: bool = False,
    auth: bool | None = None,
) -> Any:
    """Proxy to whatever HTTP server this function starts listening on `port`."""
    return _web(
        "web_server",
        port=port,
        startup_timeout=startup_timeout,
        label=label,
        requires_proxy_auth=requires_proxy_auth,
        auth=auth,
    )


_NO_DEFAULT: Any = object()


@dataclasses.dataclass(frozen=True)
class Parameter:
    default: Any = _NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


def parameter(*, default: Any = _NO_DEFAULT) -> Any:
    """Declare a class parameter: `size: int = ember.parameter(default=1)`."""
    return Parameter(default=default)
