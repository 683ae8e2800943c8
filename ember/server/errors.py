"""ApiError: a platform error with its HTTP status, rendered as wire.ErrorBody."""

from __future__ import annotations

from ember import wire


class ApiError(Exception):
    def __init__(self, status: int, type_name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type_name, self.message = status, type_name, message

    def body(self) -> dict[str, object]:
        return wire.ErrorBody(
            error=wire.ErrorInfo(type=self.type_name, message=self.message)
        ).model_dump()
