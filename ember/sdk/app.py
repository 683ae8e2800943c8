"""App: the registry that `@app.function`, `@app.cls` and `@app.local_entrypoint` fill in.

Decorating has no side effects beyond building a FunctionSpec; `ember deploy` / `ember run` (or
`with app.run():`) send the specs and the source to the server.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ember import wire
from ember.sdk.client import Client
from ember.sdk.cls import Cls, class_parameters
from ember.sdk.decorators import PartialFunction, as_partial
from ember.sdk.exceptions import InvalidError
from ember.sdk.function import Function
from ember.sdk.options import apply_deprecated, build_spec, check_option_names
from ember.sdk.synchronizer import run_sync

_FORGOT_PARENS = "Did you forget parentheses? Write `@app.{0}()`, not `@app.{0}`."


class App:
    """A named group of functions and classes deployed together.

    Example:
        app = ember.App("hello")

        @app.function()
        def square(x: int) -> int:
            return x * x
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        image: Any = None,
        secrets: list[Any] | None = None,
        volumes: dict[str, Any] | None = None,
    ) -> None:
        self.name = name or "ember-app"
        self._defaults = {"image": image, "secrets": secrets, "volumes": volumes}
        self.registered_functions: dict[str, Function | Cls] = {}
        self.specs: dict[str, wire.FunctionSpec] = {}
        self.local_entrypoints: dict[str, Callable[..., Any]] = {}
        self.deployed_name: str | None = None  # set while deployed or running
        self.inline_secrets: dict[str, dict[str, str]] = {}  # Secret.from_dict, sent on deploy
        self.create_volumes: set[str] = set()  # Volume.from_name(create_if_missing=True)

    def __repr__(self) -> str:
        return f"<ember.App {self.name}>"

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_option_names(options)
        merged = {k: v for k, v in self._defaults.items() if v is not None}
        merged.update(
            {k: v for k, v in apply_deprecated(options, stacklevel=5).items() if v is not None}
        )
        for secret in merged.get("secrets") or ():
            if getattr(secret, "values", None):
                self.inline_secrets[secret.name] = secret.values
        for volume in (merged.get("volumes") or {}).values():
            if getattr(volume, "create_if_missing", False):
                self.create_volumes.add(volume.name)
        return merged

    def _register(self, name: str, handle: Function | Cls, spec: wire.FunctionSpec) -> None:
        if name in self.specs:
            raise InvalidError(f"app {self.name!r} already has a function named {name!r}")
        self.registered_functions[name] = handle
        self.specs[name] = spec

    def function(self, _bare: Any = None, **options: Any) -> Callable[[Any], Function]:
        """Register a function; options: image, gpu, cpu, memory, timeout, retries, secrets,
        volumes, min_containers, max_containers, buffer_containers, scaledown_window,
        enable_memory_snapshot, gpu_snapshot (or experimental_options={"enable_gpu_snapshot":
        True}), schedule (and Modal's deprecated names)."""
        if _bare is not None:
            raise InvalidError(_FORGOT_PARENS.format("function"))
        opts = self._options(options)

        def decorate(f: Any) -> Function:
            if isinstance(f, type):
                raise InvalidError(
                    f"@app.function cannot decorate a class ({f.__name__}); use @app.cls() instead"
                )
            if isinstance(f, Function | Cls):
                raise InvalidError(f"{f!r} is already registered on an app")
            partial = as_partial(f)
            name = partial.raw.__name__
            spec = build_spec(
                name,
                opts,
                web=partial.web,
                max_inputs=partial.max_inputs,
                target_inputs=partial.target_inputs,
            )
            handle = Function(name, app=self, raw=partial.raw, spec=spec)
            self._register(name, handle, spec)
            return handle

        return decorate

    def cls(self, _bare: Any = None, **options: Any) -> Callable[[type], Cls]:
        """Register a class whose `@ember.method()`s run remotely; takes `function`'s options."""
        if _bare is not None:
            raise InvalidError(_FORGOT_PARENS.format("cls"))
        opts = self._options(options)

        def decorate(user_cls: Any) -> Cls:
            if not isinstance(user_cls, type):
                raise InvalidError("@app.cls decorates classes; use @app.function() for functions")
            partials = _take_partials(user_cls)
            methods = [n for n, p in partials.items() if p.is_method or p.web]
            webs = [p.web for p in partials.values() if p.web]
            if len(webs) > 1:
                raise InvalidError(f"{user_cls.__name__} has more than one web endpoint method")
            max_inputs, target = getattr(user_cls, "__ember_concurrency__", (None, None))
            spec = build_spec(
                user_cls.__name__,
                opts,
                is_class=True,
                methods=methods,
                web=webs[0] if webs else None,
                max_inputs=max_inputs,
                target_inputs=target,
            )
            if any(p.required for p in class_parameters(user_cls).values()):
                spec = spec.model_copy(update={"needs_parameters": True})
            handle = Cls(user_cls.__name__, app=self, user_cls=user_cls, spec=spec)
            self._register(user_cls.__name__, handle, spec)
            return handle

        return decorate

    def local_entrypoint(
        self, _bare: Any = None, *, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Mark the function `ember run app.py` runs on your machine."""
        if _bare is not None:
            raise InvalidError(_FORGOT_PARENS.format("local_entrypoint"))

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            self.local_entrypoints[name or f.__name__] = f
            return f

        return decorate

    # -- deploying ------------------------------------------------------------------------

    def deploy_request(
        self, *, app_name: str | None = None, ephemeral: bool = False
    ) -> wire.DeployRequest:
        """The specs plus the source of the module that defines this app."""
        module_name, files = _module_source(self)
        return wire.DeployRequest(
            app_name=app_name or self.name,
            declared_name=self.name,
            module=module_name,
            files=files,
            functions=list(self.specs.values()),
            ephemeral=ephemeral,
            inline_secrets=self.inline_secrets,
            create_volumes=sorted(self.create_volumes),
        )

    async def _deploy(self, request: wire.DeployRequest) -> wire.DeployResponse:
        data = await Client.from_settings().json(
            "POST", "/api/v1/apps", content=request.model_dump_json()
        )
        response = wire.DeployResponse.model_validate(data)
        self.deployed_name = response.app_name
        for note in response.warnings:  # what the server could not honour as asked
            print(f"Warning: {note}", file=sys.stderr, flush=True)
        return response

    def deploy(self, name: str | None = None) -> wire.DeployResponse:
        """Deploy (or redeploy, as a new version) under `name` or the app's own name."""
        return run_sync(self._deploy(self.deploy_request(app_name=name)))

    async def _stop(self) -> None:
        if self.deployed_name:
            await Client.from_settings().request("POST", f"/api/v1/apps/{self.deployed_name}/stop")
            self.deployed_name = None

    @contextlib.contextmanager
    def run(self) -> Iterator[App]:
        """Run as an ephemeral app for the duration of the `with` block."""
        ephemeral_name = f"{self.name}-run-{uuid.uuid4().hex[:8]}"
        run_sync(self._deploy(self.deploy_request(app_name=ephemeral_name, ephemeral=True)))
        try:
            yield self
        finally:
            run_sync(self._stop())


def _take_partials(user_cls: type) -> dict[str, PartialFunction]:
    """Record the class's decorated methods and put the plain functions back in their place."""
    partials: dict[str, PartialFunction] = {}
    for name, value in list(vars(user_cls).items()):
        if isinstance(value, PartialFunction):
            partials[name] = value
            setattr(user_cls, name, value.raw)
    user_cls.__ember_partials__ = partials  # type: ignore[attr-defined]
    return partials


def _module_source(app: App) -> tuple[str, dict[str, str]]:
    """Find the module that created `app`; ship its file unless it is importable anyway."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not any(v is app for v in vars(module).values()):
            continue
        file = getattr(module, "__file__", None)
        if module_name == "__main__" or not _importable_without_source(module_name):
            if file is None:
                raise InvalidError("cannot find the source of the module defining this app")
            path = Path(file)
            return path.stem, {path.name: path.read_text()}
        return module_name, {}
    raise InvalidError(
        f"{app!r} is not a module-level name of any module; define it at the top "
        "level of a file, e.g. `app = ember.App(...)`"
    )


def _importable_without_source(module_name: str) -> bool:
    """Modules inside installed packages (like `ember.llm.app`) import in a replica as they are."""
    return "." in module_name and module_name.split(".")[0] == "ember"
