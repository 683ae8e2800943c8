"""Cls and its parameterised instances: `Model(size=2).predict.remote(x)`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ember import wire
from ember.sdk.decorators import Parameter, PartialFunction
from ember.sdk.exceptions import InvalidError
from ember.sdk.function import Function
from ember.sdk.serialization import encode_params

if TYPE_CHECKING:
    from ember.sdk.app import App


def class_partials(user_cls: type) -> dict[str, PartialFunction]:
    """The decorated methods of a user class, recorded by `@app.cls`."""
    return dict(getattr(user_cls, "__ember_partials__", {}))


def class_parameters(user_cls: type) -> dict[str, Parameter]:
    return {
        name: value
        for klass in reversed(user_cls.__mro__)
        for name, value in vars(klass).items()
        if isinstance(value, Parameter)
    }


def resolve_parameters(user_cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Check the keyword arguments of `Model(...)` against the declared `ember.parameter()`s."""
    declared = class_parameters(user_cls)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise InvalidError(
            f"{user_cls.__name__} has no parameter {', '.join(unknown)}; "
            f"declared parameters: {valid}"
        )
    values = {name: p.default for name, p in declared.items() if not p.required}
    values.update(given)
    missing = sorted(set(declared) - set(values))
    if missing:
        raise InvalidError(f"{user_cls.__name__} needs parameter(s) {', '.join(missing)}")
    return values


def instantiate(user_cls: type, params: dict[str, Any]) -> Any:
    """Build the user's object with its parameters set, as a replica (or `.local`) does."""
    if "__init__" in {name for klass in user_cls.__mro__[:-1] for name in vars(klass)}:
        return user_cls(**params)  # an old-style class with its own constructor
    obj: Any = object.__new__(user_cls)
    for name, value in params.items():
        setattr(obj, name, value)
    return obj


HookKind = Literal["snap", "enter", "exit", "before_park", "after_restore"]


def hook_kind(partial: PartialFunction) -> HookKind | None:
    if partial.enter_snap is not None:
        return "snap" if partial.enter_snap else "enter"
    if partial.is_exit:
        return "exit"
    return partial.park  # type: ignore[return-value]


def hooks(
    obj: Any, partials: dict[str, PartialFunction], kind: HookKind
) -> list[Callable[[], Any]]:
    """The object's hooks of one kind, bound, in definition order."""
    return [getattr(obj, name) for name, p in partials.items() if hook_kind(p) == kind]


class Cls:
    """A deployed class: call it with parameters to get an object whose methods run remotely."""

    def __init__(
        self,
        name: str,
        *,
        app: App | None = None,
        app_name: str | None = None,
        user_cls: type | None = None,
        spec: wire.FunctionSpec | None = None,
    ) -> None:
        self.name, self.app, self.app_name = name, app, app_name
        self._user_cls, self.spec = user_cls, spec

    def __repr__(self) -> str:
        return f"<ember.Cls {self.name}>"

    @classmethod
    def from_name(cls, app_name: str, name: str) -> Cls:
        """A handle on class `name` of the deployed app `app_name`."""
        return cls(name, app_name=app_name)

    def __call__(self, **params: Any) -> Obj:
        if self._user_cls is not None:
            params = resolve_parameters(self._user_cls, params)
        return Obj(self, params)

    def get_user_cls(self) -> type:
        if self._user_cls is None:
            raise InvalidError(f"{self!r} was looked up by name; its code is not available here")
        return self._user_cls


class Obj:
    """One parameterisation of a Cls; every distinct set of parameters gets its own replicas."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls, self._params = cls, params
        self._encoded = encode_params(params)
        self._local_obj: Any = None

    def _local_instance(self) -> Any:
        if self._local_obj is None:
            user_cls = self._cls.get_user_cls()
            obj = instantiate(user_cls, self._params)
            partials = class_partials(user_cls)
            for hook in hooks(obj, partials, "snap") + hooks(obj, partials, "enter"):
                if inspect.iscoroutine(result := hook()):
                    asyncio.run(result)
            self._local_obj = obj
        return self._local_obj

    def __getattr__(self, method: str) -> Function:
        if method.startswith("_"):
            raise AttributeError(method)
        spec = self._cls.spec
        if spec is not None and method not in spec.methods:
            raise AttributeError(
                f"{self._cls.name} has no method {method!r} "
                f"(methods: {', '.join(spec.methods) or 'none'}); "
                "decorate it with @ember.method()"
            )

        def local_call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self._local_instance(), method)(*args, **kwargs)

        return Function(
            self._cls.name,
            app=self._cls.app,
            app_name=self._cls.app_name,
            spec=spec,
            method=method,
            params=self._encoded,
            local_call=local_call,
        )
