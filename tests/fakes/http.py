"""An Http1Pool stand-in whose answers the test scripts: outputs, errors, or silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ember import wire
from ember.http1 import HttpError


@dataclass
class Answer:
    """What one request gets: a status, then body pieces; `hang` after them waits forever (or
    until `until` is set, then the answer ends); `error` breaks the connection after them."""

    status: int = 200
    pieces: list[bytes] = field(default_factory=list)
    hang: bool = False
    error: str | None = None
    until: asyncio.Event | None = None

    @classmethod
    def frames(cls, *frames: bytes, **kwargs: object) -> Answer:
        return cls(pieces=[wire.pack_frames([f]) for f in frames], **kwargs)  # type: ignore[arg-type]


@dataclass
class FakeResponse:
    status: int
    answer: Answer

    async def iter_body(self) -> AsyncIterator[bytes]:
        for piece in self.answer.pieces:
            yield piece
        if self.answer.error:
            raise HttpError(self.answer.error)
        if self.answer.hang:
            await (self.answer.until or asyncio.Event()).wait()

    async def read(self) -> bytes:
        return b"".join([p async for p in self.iter_body()])


class FakeHttp:
    def __init__(self, answer: Callable[[str, bytes], Answer]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, bool]] = []  # (target, body, fresh)

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: object = None,
        body: bytes = b"",
        connect_timeout: float = 5.0,
        fresh: bool = False,
    ) -> FakeResponse:
        self.requests.append((target, body, fresh))  # type: ignore[arg-type]
        answer = self.answer(target, body)
        if answer.status == 0:
            raise HttpError(answer.error or "connection refused")
        return FakeResponse(answer.status, answer)
