"""Ember's OpenAI-compatible HTTP API over a token engine.

/v1/models, /v1/chat/completions and /v1/completions (streamed as server-sent events or not),
plus /health, /metrics, /sleep, /wake_up and /is_sleeping for the platform. Bad requests get
OpenAI's error body with a 400 or 404; the engine never sees them. Tokenizing runs in a thread,
after a length check by characters, so one huge prompt never holds up the other streams. A
stream's headers go out with its first token, so an engine that cannot serve gets a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ember.llm.chunks import ChatChunks, CompletionChunks, Piece, sse
from ember.llm.detokenizer import Detokenizer
from ember.llm.engines.base import EngineDeadError, SamplingParams, TokenEngine
from ember.llm.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    OpenAIError,
    Usage,
)

Body = TypeVar("Body", bound=BaseModel)
CLIENT_GONE = Response(status_code=499)  # nginx's "client closed request": nobody reads it


def openai_app(engine: TokenEngine) -> Starlette:
    api = OpenAIServer(engine)
    routes = [
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={OpenAIError: _error_response})  # type: ignore[dict-item]


async def _error_response(_request: Request, error: OpenAIError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


class OpenAIServer:
    def __init__(self, engine: TokenEngine) -> None:
        self.engine = engine

    # -- the OpenAI routes ----------------------------------------------------------------

    async def models(self, _request: Request) -> Response:
        card = ModelCard(id=self.engine.served_model_name, max_model_len=self.engine.max_model_len)
        return JSONResponse(ModelList(data=[card]).model_dump())

    async def chat(self, request: Request) -> Response:
        body = await self._parse(request, ChatCompletionRequest)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        self._check_length(sum(len(m["content"]) for m in messages), "messages")
        try:
            prompt = await asyncio.to_thread(self.engine.apply_chat_template, messages)
        except ValueError as e:
            raise OpenAIError(str(e), param="messages") from None
        return await self._answer(request, body, prompt, "messages")

    async def completions(self, request: Request) -> Response:
        body = await self._parse(request, CompletionRequest)
        return await self._answer(request, body, await self._prompt_ids(body.prompt), "prompt")

    async def _answer(
        self, request: Request, body: ChatCompletionRequest | CompletionRequest,
        prompt: list[int], prompt_param: str,
    ) -> Response:  # fmt: skip
        params = self._sampling(body, len(prompt), body.token_limit(), prompt_param)
        pieces = self._pieces(prompt, params, body.stop_strings())
        if body.stream:
            with _engine_errors():
                first = await anext(pieces)  # errors before any byte is sent get a status
            chat = isinstance(body, ChatCompletionRequest)
            chunks = (ChatChunks if chat else CompletionChunks)(body.model, len(prompt))
            events = sse(chunks, body.include_usage, first, pieces)
            return StreamingResponse(events, media_type="text/event-stream")
        with _engine_errors():
            collected = await _collect(request, pieces)
        if collected is None:
            return CLIENT_GONE
        text, last = collected
        usage = Usage.of(len(prompt), last.completion_tokens)
        reason = last.finish_reason or "stop"
        if isinstance(body, ChatCompletionRequest):
            message = ChatChoice(message=AssistantMessage(content=text), finish_reason=reason)
            answer: BaseModel = ChatCompletion(model=body.model, choices=[message], usage=usage)
        else:
            choice = CompletionChoice(text=text, finish_reason=reason)
            answer = Completion(model=body.model, choices=[choice], usage=usage)
        return JSONResponse(answer.model_dump())

    # -- the platform's routes ------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "sleeping": self.engine.is_sleeping})

    async def metrics(self, _request: Request) -> Response:
        return Response(self.engine.metrics_text(), media_type="text/plain; version=0.0.4")

    # -- checks -----------------------------------------------------------------------------

    async def _parse(self, request: Request, model: type[Body]) -> Body:
        body = await _parse(request, model)
        assert isinstance(body, ChatCompletionRequest | CompletionRequest)
        self._check_model(body.model)
        field = body.refused_field()
        if field is not None:
            raise OpenAIError(
                f"`{field}` is not supported by Ember's built-in engine; leave it out, or serve "
                "the model with `ember llm serve --engine vllm`",
                param=field, code="unsupported_parameter",
            )  # fmt: skip
        return body

    def _check_length(self, chars: int, param: str) -> None:
        """Refuse, before tokenizing, text too long for the context whatever its tokens."""
        limit = self.engine.max_model_len * self.engine.max_token_chars
        if chars > limit:
            raise OpenAIError(
                f"This model's maximum context length is {self.engine.max_model_len} tokens; "
                f"your {param} hold {chars} characters, more than that many tokens can (at "
                f"most {limit}); shorten them.",
                param=param, code="context_length_exceeded",
            )  # fmt: skip

    def _check_model(self, name: str) -> None:
        if name != self.engine.served_model_name:
            raise OpenAIError(
                f"The model `{name}` does not exist; this endpoint serves "
                f"`{self.engine.served_model_name}` (see /v1/models).",
                status=404, param="model", code="model_not_found",
            )  # fmt: skip

    async def _prompt_ids(self, prompt: str | list[str] | list[int]) -> list[int]:
        if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
            ids = [int(p) for p in prompt]
            vocab = self.engine.vocab_size
            if any(not 0 <= i < vocab for i in ids):
                raise OpenAIError(f"prompt token ids must be in [0, {vocab})", param="prompt")
        else:
            if isinstance(prompt, list) and len(prompt) != 1:
                raise OpenAIError("only one prompt per request is supported", param="prompt")
            text = str(prompt[0]) if isinstance(prompt, list) else prompt
            self._check_length(len(text), "prompt")
            ids = await asyncio.to_thread(self.engine.encode, text)
        if not ids:
            raise OpenAIError("prompt must not be empty", param="prompt")
        return ids

    def _sampling(
        self, body: ChatCompletionRequest | CompletionRequest, prompt_len: int,
        requested: int | None, prompt_param: str,
    ) -> SamplingParams:  # fmt: skip
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise OpenAIError(
                f"This model's maximum context length is {limit} tokens, and your {prompt_param} "
                f"take {prompt_len}; shorten them.",
                param=prompt_param, code="context_length_exceeded",
            )  # fmt: skip
        room = limit - prompt_len
        if requested is not None and requested > room:
            raise OpenAIError(
                f"This model's maximum context length is {limit} tokens; you asked for "
                f"{prompt_len + requested} ({prompt_len} in the {prompt_param}, {requested} in the "
                f"completion). Ask for at most {room} completion tokens.",
                param="max_tokens", code="context_length_exceeded",
            )  # fmt: skip
        return SamplingParams(
            max_tokens=requested or room,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            ignore_eos=body.ignore_eos,
        )

    # -- generation -------------------------------------------------------------------------

    async def _pieces(
        self, prompt: list[int], params: SamplingParams, stop: list[str]
    ) -> AsyncIterator[Piece]:
        detokenizer = Detokenizer(self.engine.decode_stream(), self.engine.decode, stop)
        count = 0
        steps = self.engine.generate(prompt, params)
        try:
            async for step in steps:
                first = count == 0  # sent even without text: it carries the time to first token
                count += len(step.token_ids)
                text = detokenizer.add(step.token_ids)
                if step.finish_reason is not None and not detokenizer.stopped:
                    text += detokenizer.flush()
                if detokenizer.stopped:
                    yield Piece(text, "stop", count)
                    return  # closing `steps` cancels the rest of the request
                if step.finish_reason is not None:
                    yield Piece(text, step.finish_reason, count)
                    return
                if text or first:
                    yield Piece(text, None, count)
        finally:
            await steps.aclose()  # type: ignore[attr-defined]


async def _parse(request: Request, model: type[Body]) -> Body:
    """Strict JSON (no "4" for 4): pydantic's parser also bounds nesting and refuses lone
    surrogates, which would otherwise reach the tokenizer."""
    try:
        return model.model_validate_json(await request.body(), strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            reason = str(first["msg"]).removeprefix("Invalid JSON: ")
            raise OpenAIError(f"the request body is not valid JSON: {reason}") from None
        if first["type"] == "model_type":
            raise OpenAIError("the request body must be a JSON object") from None
        param = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise OpenAIError(f"{param}: {message}", param=param) from None


@contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except EngineDeadError as e:
        raise OpenAIError(
            f"{e}; this replica is being replaced, try again", status=503, type="server_error",
            code="engine_unavailable",
        ) from None  # fmt: skip


async def _collect(request: Request, pieces: AsyncIterator[Piece]) -> tuple[str, Piece] | None:
    """All pieces joined, or None (generation stopped) if the client went away first."""

    async def join() -> tuple[str, Piece]:
        texts, last = [], Piece("", None, 0)
        async for last in pieces:
            texts.append(last.text)
        return "".join(texts), last

    work = asyncio.ensure_future(join())
    gone = asyncio.ensure_future(_disconnected(request))
    await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not work.done():
        work.cancel()  # cancelling closes `pieces`, which cancels the engine's request
        return None
    return work.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
