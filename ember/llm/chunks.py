"""A streamed answer as server-sent events: OpenAI's chunk objects, one `data:` line each.

A stream sends one chunk per piece of text, so the per-piece path is kept short: the chunk is
rendered once per stream with a marker where the text goes, and each piece's JSON-escaped text is
spliced in; one generator (`sse`) walks the pieces. The opening, finishing and usage chunks are
built the ordinary way.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import BaseModel

from ember.llm.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    Completion,
    CompletionChoice,
    Delta,
    FinishReason,
    OpenAIError,
    Usage,
    new_id,
)

_MARK = "\x00"  # never in a model's text: the tokenizer's output has no NUL


@dataclass(frozen=True)
class Piece:
    """Text that became final, with the finish reason on the last piece."""

    text: str
    finish_reason: FinishReason | None
    completion_tokens: int


def event(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


class ChunkFormat(ABC):
    """The chunks of one streamed answer; `text` is the fast path, one per piece."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.model, self.prompt_tokens = model, prompt_tokens
        self.head, self.tail = event(self.chunk(_MARK, None)).split(json.dumps(_MARK)[1:-1])

    def text(self, text: str) -> str:
        return f"{self.head}{json.dumps(text, ensure_ascii=False)[1:-1]}{self.tail}"

    def opening(self) -> list[str]:
        return []

    def finish(self, piece: Piece) -> str:
        return event(self.chunk(piece.text, piece.finish_reason))

    @abstractmethod
    def usage(self, completion_tokens: int) -> str: ...

    @abstractmethod
    def chunk(self, text: str, reason: FinishReason | None) -> BaseModel: ...


class CompletionChunks(ChunkFormat):
    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id = new_id("cmpl")
        super().__init__(model, prompt_tokens)

    def chunk(self, text: str, reason: FinishReason | None) -> BaseModel:
        choice = CompletionChoice(text=text, finish_reason=reason)
        return Completion(id=self.id, model=self.model, choices=[choice])

    def usage(self, completion_tokens: int) -> str:
        usage = Usage.of(self.prompt_tokens, completion_tokens)
        return event(Completion(id=self.id, model=self.model, choices=[], usage=usage))


class ChatChunks(ChunkFormat):
    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id = new_id("chatcmpl")
        super().__init__(model, prompt_tokens)

    def chunk(self, text: str, reason: FinishReason | None, role: bool = False) -> BaseModel:
        delta = Delta(role="assistant" if role else None, content=text or None if reason else text)
        choice = ChatChunkChoice(delta=delta, finish_reason=reason)
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[choice])

    def opening(self) -> list[str]:
        return [event(self.chunk("", None, role=True))]

    def usage(self, completion_tokens: int) -> str:
        usage = Usage.of(self.prompt_tokens, completion_tokens)
        return event(ChatCompletionChunk(id=self.id, model=self.model, choices=[], usage=usage))


async def sse(
    chunks: ChunkFormat, include_usage: bool, first: Piece, rest: AsyncIterator[Piece]
) -> AsyncIterator[str]:
    """The stream's events, then `[DONE]`; a failure after the headers went out (they go with
    the first piece) becomes an error event, as OpenAI sends it."""
    try:
        for line in chunks.opening():
            yield line
        piece = first
        while piece.finish_reason is None:
            yield chunks.text(piece.text)
            piece = await anext(rest)
        yield chunks.finish(piece)
        if include_usage:
            yield chunks.usage(piece.completion_tokens)
    except Exception as e:  # noqa: BLE001 - headers are sent: report in the stream
        error = OpenAIError(f"generation failed: {e}", type="server_error")
        yield f"data: {json.dumps(error.body())}\n\n"
    yield "data: [DONE]\n\n"
