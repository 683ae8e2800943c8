"""Decorator validation: misuse gets an error that shows the fix."""

from __future__ import annotations

import pytest

import ember
from ember.sdk.exceptions import InvalidError


def test_specs_record_every_option() -> None:
    app = ember.App("opts")

    @app.function(
        gpu="H100:2",
        cpu=2,
        memory=1024,
        timeout=30,
        retries=ember.Retries(max_retries=3),
        min_containers=1,
        max_containers=4,
        buffer_containers=1,
        scaledown_window=10,
        enable_memory_snapshot=True,
        schedule=ember.Period(minutes=5),
    )
    @ember.concurrent(max_inputs=8, target_inputs=4)
    def f() -> None: ...

    spec = app.specs["f"]
    assert (spec.gpu, spec.cpu, spec.memory, spec.timeout) == ("H100:2", 2, 1024, 30)
    assert spec.retries.max_retries == 3
    assert (spec.min_containers, spec.max_containers, spec.buffer_containers) == (1, 4, 1)
    assert (spec.max_inputs, spec.target_inputs) == (8, 4)
    assert spec.schedule is not None and spec.schedule.seconds == 300
    assert spec.enable_memory_snapshot


def test_deprecated_names_map_with_a_warning() -> None:
    app = ember.App("old")
    with pytest.warns(DeprecationWarning) as warned:
        decorator = app.function(
            keep_warm=2, concurrency_limit=3, container_idle_timeout=9, allow_concurrent_inputs=5
        )
    messages = {str(w.message).split(";")[0] for w in warned}
    assert messages == {
        f"`{old}` is deprecated"
        for old in (
            "keep_warm",
            "concurrency_limit",
            "container_idle_timeout",
            "allow_concurrent_inputs",
        )
    }

    def g() -> None: ...

    decorator(g)
    spec = app.specs["g"]
    assert (spec.min_containers, spec.max_containers, spec.scaledown_window, spec.max_inputs) == (
        2,
        3,
        9,
        5,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpu": "potato"}, "unknown gpu 'potato'"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"min_containers": 3, "max_containers": 1}, "cannot exceed max_containers"),
        ({"retries": -1}, "between 0 and 10"),
        ({"volumes": {"relative/path": "v"}}, "must be absolute"),
        ({"schedule": "daily"}, "ember.Cron"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    app = ember.App("bad")

    def f() -> None: ...

    with pytest.raises(InvalidError, match=message):
        app.function(**options)(f)


def test_misuse_errors_show_the_fix() -> None:
    app = ember.App("misuse")
    with pytest.raises(InvalidError, match=r"Did you forget parentheses"):
        app.function(lambda: None)
    with pytest.raises(InvalidError, match=r"use @app.cls"):
        app.function()(type("K", (), {}))
    with pytest.raises(InvalidError, match=r"malformed cron expression"):
        ember.Cron("every day")
    with pytest.raises(InvalidError, match="max_inputs"):
        ember.concurrent(max_inputs=0)


def test_class_parameters_are_checked() -> None:
    app = ember.App("params")

    @app.cls()
    class Model:
        size: int = ember.parameter()
        name: str = ember.parameter(default="x")

        @ember.method()
        def run(self) -> str:
            return f"{self.name}{self.size}"

    assert Model(size=3).run.local() == "x3"
    with pytest.raises(InvalidError, match=r"needs parameter"):
        Model()
    with pytest.raises(AttributeError, match=r"decorate it with @ember.method"):
        Model(size=1).missing  # noqa: B018
