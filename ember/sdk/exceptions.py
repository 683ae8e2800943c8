"""Exceptions the SDK raises; platform errors from the server map onto these by name."""

from __future__ import annotations


class Error(Exception):
    """Base class of every Ember error."""


class InvalidError(Error):
    """A decorator, argument or spec that cannot work; the message says how to fix it."""


class NotFoundError(Error):
    """An app, function, method or call that does not exist."""


class PathNotFoundError(NotFoundError, FileNotFoundError):
    """A path that does not exist in a volume (a FileNotFoundError too, as in Modal)."""


class AlreadyExistsError(Error, FileExistsError):
    """A volume, or a file in one, that exists already; the message says how to replace it."""


class AuthError(Error):
    """A missing, wrong or revoked token."""


class ConnectionError(Error):
    """The control plane cannot be reached."""


class FunctionTimeoutError(Error):
    """An input ran longer than its function's `timeout`."""


class ExecutionError(Error):
    """The platform failed to run an input (for example its replica crashed on every retry)."""


class RemoteError(Error):
    """A user exception that could not be rebuilt on the caller; carries the remote traceback."""


class DeserializationError(Error):
    """A value that cannot be pickled or unpickled."""


class InputCancellation(Error):
    """The call was cancelled before it produced a result."""


class OutputExpiredError(TimeoutError, Error):
    """`FunctionCall.get(timeout=...)` ran out of time before the result was ready."""


class BudgetExceededError(Error):
    """The app's (or the server's) monthly budget is spent and the input needed a new replica
    (`ember budget set` raises it)."""


class ServerError(Error):
    """The control plane answered with an unexpected error."""


_BY_NAME: dict[str, type[Error]] = {
    cls.__name__: cls
    for cls in (
        InvalidError,
        NotFoundError,
        PathNotFoundError,
        AlreadyExistsError,
        AuthError,
        FunctionTimeoutError,
        ExecutionError,
        RemoteError,
        DeserializationError,
        InputCancellation,
        OutputExpiredError,
        BudgetExceededError,
        ServerError,
    )
}


def error_from_wire(type_name: str, message: str) -> Error:
    """Build the exception a platform error names; unknown names become ServerError."""
    return _BY_NAME.get(type_name, ServerError)(message)
