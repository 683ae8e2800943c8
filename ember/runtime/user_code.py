"""Load the user's module in a replica and expose its callables, hooks and web app."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ember import wire
from ember.sdk.app import App
from ember.sdk.cls import Cls, class_partials, hooks, instantiate
from ember.sdk.exceptions import NotFoundError
from ember.sdk.function import Function
from ember.sdk.serialization import decode_params


@dataclass
class UserCode:
    """The callables one replica serves, plus its lifecycle hooks."""

    spec: wire.FunctionSpec
    callables: dict[str, Callable[..., Any]]  # method name ("" for a plain function) -> callable
    snap_hooks: list[Callable[[], Any]] = field(default_factory=list)  # @enter(snap=True)
    enter_hooks: list[Callable[[], Any]] = field(default_factory=list)  # @enter(snap=False)
    exit_hooks: list[Callable[[], Any]] = field(default_factory=list)
    park_hooks: list[Callable[[], Any]] = field(default_factory=list)  # @before_park
    restore_hooks: list[Callable[[], Any]] = field(default_factory=list)  # @after_restore
    web_factory: Callable[[], Any] | None = None  # returns the ASGI/WSGI app or starts a server

    def get(self, method: str | None) -> Callable[..., Any]:
        key = method or ""
        if key not in self.callables:
            known = ", ".join(k for k in self.callables if k) or "none"
            raise NotFoundError(f"{self.spec.name} has no method {key!r} (methods: {known})")
        return self.callables[key]

    async def run_hooks(self, which: list[Callable[[], Any]]) -> None:
        """Sync hooks run in a thread so the replica keeps answering health checks meanwhile."""
        for hook in which:
            if inspect.iscoroutinefunction(hook):
                await hook()
            else:
                await asyncio.to_thread(hook)


def find_app(module: Any, declared_name: str) -> App:
    apps = [v for v in vars(module).values() if isinstance(v, App) and v.name == declared_name]
    if not apps:
        raise NotFoundError(f"module {module.__name__!r} defines no ember.App({declared_name!r})")
    return apps[0]


def load_user_code(spec: wire.ReplicaSpec) -> UserCode:
    """Import the user's module and bind what the replica serves (no hook runs yet)."""
    if spec.source_dir and spec.source_dir not in sys.path:
        sys.path.insert(0, spec.source_dir)
    module = importlib.import_module(spec.module)
    app = find_app(module, spec.declared_name)
    app.deployed_name = spec.app_name
    handle = app.registered_functions.get(spec.function.name)
    if isinstance(handle, Function):
        raw = handle.get_raw_f()
        web = raw if spec.function.web else None
        return UserCode(spec.function, {"": raw}, web_factory=web)
    if isinstance(handle, Cls):
        return _class_code(spec, handle)
    raise NotFoundError(f"app {spec.declared_name!r} has no function {spec.function.name!r}")


def _class_code(spec: wire.ReplicaSpec, handle: Cls) -> UserCode:
    user_cls = handle.get_user_cls()
    obj = instantiate(user_cls, decode_params(spec.params))
    partials = class_partials(user_cls)
    callables = {name: getattr(obj, name) for name, p in partials.items() if p.is_method}
    web_methods = [getattr(obj, name) for name, p in partials.items() if p.web]
    return UserCode(
        spec.function,
        callables,
        snap_hooks=hooks(obj, partials, "snap"),
        enter_hooks=hooks(obj, partials, "enter"),
        exit_hooks=hooks(obj, partials, "exit"),
        park_hooks=hooks(obj, partials, "before_park"),
        restore_hooks=hooks(obj, partials, "after_restore"),
        web_factory=web_methods[0] if web_methods else None,
    )
