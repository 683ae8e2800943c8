"""A streamed answer as server-sent events: OpenAI's chunk objects, one `data:` line each.

A stream sends one chunk per piece of text, so chunks are not built and serialized one by one:
each stream renders its chunk once with a marker where the text goes, and splices each piece's
JSON-escaped text in. The first and last chunks (role, finish reason, usage) are built as usual.
"""

from __future__ import annotations

import json
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


class _Template:
    """A chunk rendered once, with `_MARK` where each piece's text goes."""

    def __init__(self, chunk: BaseModel) -> None:
        self.head, self.tail = f"data: {chunk.model_dump_json()}\n\n".split(json.dumps(_MARK)[1:-1])

    def render(self, text: str) -> str:
        return f"{self.head}{json.dumps(text, ensure_ascii=False)[1:-1]}{self.tail}"


def event(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


async def chat_chunks(
    model: str, prompt_tokens: int, include_usage: bool, pieces: AsyncIterator[Piece]
) -> AsyncIterator[str]:
    chunk_id = new_id("chatcmpl")

    def chunk(delta: Delta, reason: FinishReason | None = None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=reason)
        return ChatCompletionChunk(id=chunk_id, model=model, choices=[choice])

    text = _Template(chunk(Delta(content=_MARK)))
    yield event(chunk(Delta(role="assistant", content="")))
    completion_tokens = 0
    async for piece in pieces:
        completion_tokens = piece.completion_tokens
        if piece.finish_reason is None:
            yield text.render(piece.text)
        else:
            yield event(chunk(Delta(content=piece.text or None), piece.finish_reason))
    if include_usage:
        usage = Usage.of(prompt_tokens, completion_tokens)
        yield event(ChatCompletionChunk(id=chunk_id, model=model, choices=[], usage=usage))


async def completion_chunks(
    model: str, prompt_tokens: int, include_usage: bool, pieces: AsyncIterator[Piece]
) -> AsyncIterator[str]:
    completion_id = new_id("cmpl")

    def chunk(text: str, reason: FinishReason | None = None) -> Completion:
        choice = CompletionChoice(text=text, finish_reason=reason)
        return Completion(id=completion_id, model=model, choices=[choice])

    text = _Template(chunk(_MARK))
    completion_tokens = 0
    async for piece in pieces:
        completion_tokens = piece.completion_tokens
        if piece.finish_reason is None:
            yield text.render(piece.text)
        else:
            yield event(chunk(piece.text, piece.finish_reason))
    if include_usage:
        usage = Usage.of(prompt_tokens, completion_tokens)
        yield event(Completion(id=completion_id, model=model, choices=[], usage=usage))


async def sse(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """The events, then `[DONE]`; a failure after the headers went out becomes an error event."""
    try:
        async for line in events:
            yield line
    except Exception as e:  # noqa: BLE001 - headers are sent: report in the stream, as OpenAI does
        error = OpenAIError(f"generation failed: {e}", type="server_error")
        yield f"data: {json.dumps(error.body())}\n\n"
    yield "data: [DONE]\n\n"
