"""Pickling of inputs, outputs and class parameters, shared by the SDK and the replica runtime."""

from __future__ import annotations

import base64
import json
import traceback
from typing import Any

import cloudpickle

from ember import wire
from ember.sdk.exceptions import DeserializationError, RemoteError, error_from_wire


def serialize(obj: Any, what: str = "value") -> bytes:
    try:
        return bytes(cloudpickle.dumps(obj))
    except Exception as exc:
        raise DeserializationError(
            f"cannot serialize {what} ({type(obj).__name__}): {exc}. Arguments and results must "
            "be picklable by cloudpickle (no open files, sockets, locks or generators)."
        ) from exc


def deserialize(data: bytes, what: str = "value") -> Any:
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        raise DeserializationError(f"cannot deserialize {what}: {exc}") from exc


def encode_params(params: dict[str, Any]) -> str:
    """Class parameters as a header value; the same parameters always give the same string."""
    if not params:
        return ""
    return base64.b64encode(serialize(dict(sorted(params.items())), "class parameters")).decode()


def decode_params(value: str) -> dict[str, Any]:
    return {} if not value else dict(deserialize(base64.b64decode(value), "class parameters"))


def ok_frame(value: Any) -> bytes:
    try:
        return bytes([wire.Outcome.OK]) + bytes(cloudpickle.dumps(value))
    except Exception as exc:  # noqa: BLE001 - an unpicklable result is the user's error
        return error_frame(
            DeserializationError(
                f"cannot serialize the return value ({type(value).__name__}): {exc}"
            )
        )


def error_frame(exc: BaseException) -> bytes:
    tb = "".join(traceback.format_exception(exc))
    try:
        pickled: _PickledException | None = _PickledException(cloudpickle.dumps(exc))
    except Exception:  # noqa: BLE001 - the exception itself may not pickle; keep its text
        pickled = None
    return bytes([wire.Outcome.USER_ERROR]) + bytes(cloudpickle.dumps((pickled, tb, repr(exc))))


class _PickledException:
    """An exception pickled apart from its traceback text: unpickling it yields None where the
    caller cannot import the exception's class, so the remote traceback still gets through."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return _exception_or_none, (self.data,)


def _exception_or_none(data: bytes) -> BaseException | None:
    try:
        exc = cloudpickle.loads(data)
    except Exception:  # noqa: BLE001 - e.g. the exception's class is not importable here
        return None
    return exc if isinstance(exc, BaseException) else None


def outcome_value(frame: bytes) -> Any:
    """Return the value an output frame holds, or raise the error it carries."""
    kind, body = frame[0], frame[1:]
    if kind == wire.Outcome.OK:
        return deserialize(body, "the return value")
    if kind == wire.Outcome.USER_ERROR:
        try:
            exc, tb, text = cloudpickle.loads(body)
        except Exception:  # noqa: BLE001 - a frame of an older Ember, whose class is missing here
            exc, tb, text = None, "", "remote exception (its class is not importable here)"
        if exc is None:
            raise RemoteError(f"{text}\n\nRemote traceback:\n{tb}")
        exc.add_note(f"Remote traceback:\n{tb}")
        raise exc
    info = wire.ErrorInfo.model_validate(json.loads(body))
    raise error_from_wire(info.type, info.message)
