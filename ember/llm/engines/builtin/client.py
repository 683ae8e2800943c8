"""The built-in engine as the replica sees it: a TokenEngine whose model runs in a child process.

`load` reads the tokenizer and the weights into host memory, in the process replicas fork from.
`start` forks the engine process from the replica (neither of them ever touches CUDA, so the
child can) and waits until the model is on its device and the CUDA graphs are captured.
Requests go to the engine over one pipe; a reader thread takes each step's outputs from the
other and wakes the streams that got tokens, once per step. A stream whose consumer falls
behind gets its pending tokens in one piece. If the engine process dies, every request fails
with `EngineDeadError` and `on_death` is called, so the replica can end itself and be replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ember.llm.config import LLMConfig
from ember.llm.detokenizer import IncrementalDecoder, WindowDecoder
from ember.llm.engines.base import EngineDeadError, SamplingParams, Step
from ember.llm.engines.builtin.engine import ModelLoader, read_pretrained
from ember.llm.engines.builtin.messages import (
    AbortRequests,
    AddRequest,
    Command,
    Control,
    ControlDone,
    EngineFailed,
    EngineReady,
    GraphsCaptured,
    RequestOutput,
    StepOutputs,
    ToEngine,
)
from ember.llm.engines.builtin.settings import EngineSettings
from ember.llm.metrics import EngineMetrics
from ember.llm.models import ModelError, check_readable_here
from ember.runtime import phases

STOP_TIMEOUT = 30.0  # seconds the engine process gets to exit before it is killed


class PromptError(ValueError):
    """The messages cannot be turned into a prompt by the model's chat template."""


class _Stream:
    """One request's outputs, appended by the reader thread and read on the request's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.outputs: deque[RequestOutput] = deque()
        self.ready = asyncio.Event()
        self.error: str | None = None

    async def next_step(self) -> Step:
        while not self.outputs:
            if self.error is not None:
                raise EngineDeadError(self.error)
            self.ready.clear()
            await self.ready.wait()
        tokens: list[int] = []
        reason = None
        while self.outputs:  # everything that arrived since the last read, as one step
            output = self.outputs.popleft()
            tokens += output.token_ids
            reason = output.finish_reason
        return Step(tokens, reason)


class BuiltinEngine:
    def __init__(
        self,
        config: LLMConfig,
        load: ModelLoader | None = None,
        on_death: Callable[[str], None] | None = None,
    ) -> None:
        """`load` builds the model in the engine process instead of reading the config's folder
        (benchmarks bring random-weight models); such an engine has no tokenizer and takes token
        ids only."""
        self.settings = EngineSettings.of(config)
        self.served_model_name = config.served_model_name
        self.max_model_len = config.model.max_model_len
        self.metrics = EngineMetrics()
        self.on_death = on_death
        self._load = load
        self.tokenizer: Any = None
        self._max_token_chars: int | None = None
        self.info: EngineReady | None = None
        self.graphs_captured = threading.Event()  # set once the engine says so (benchmarks wait)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._to_engine: Any = None
        self._send_lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._idle = asyncio.Event()  # set while no request is in flight
        self._idle.set()
        self._state = asyncio.Lock()  # sleeping or awake; taken briefly by each new request
        self._asleep = self._stopping = False
        self._control: tuple[asyncio.AbstractEventLoop, asyncio.Future[ControlDone]] | None = None
        self.dead: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """The tokenizer and the weights, in host memory: once, in the process replicas fork from
        (nothing here touches CUDA). A no-op for an engine given its model."""
        if self._load is not None:
            return
        from transformers import AutoTokenizer

        check_readable_here(self.settings.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(Path(self.settings.model_path))
        self._load = read_pretrained(self.settings.model_path, self.settings.cuda)
        if self.settings.cuda:
            from ember.llm.engines.builtin import triton_attention

            triton_attention.prepare()

    def start(self) -> None:
        """Fork the engine process and wait until it is ready."""
        from ember.llm.engines.builtin.process import engine_main

        self.load()
        context = multiprocessing.get_context("fork")  # not spawn: no second import of torch
        engine_in, self._to_engine = context.Pipe(duplex=False)
        from_engine, engine_out = context.Pipe(duplex=False)
        assert self._load is not None
        args = (self.settings, self._load, engine_in, engine_out, [self._to_engine, from_engine])
        self._process = context.Process(target=engine_main, args=args, name="ember-engine")
        with warnings.catch_warnings(), ThreadPoolExecutor(1) as forker:
            # Python 3.12 warns on fork in a threaded process; the child runs only engine code.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Forked from a fresh thread: GNU OpenMP's thread pool belongs to the thread that ran
            # torch's CPU kernels and does not survive fork, so a child forked from such a thread
            # hangs at its first parallel kernel (a test or notebook may have run one).
            forker.submit(self._process.start).result()
        engine_in.close()
        engine_out.close()
        self.info = self._wait_ready(from_engine)
        for name, seconds in self.info.phases.items():  # in this replica's cold start
            phases.record(name, seconds)
        reader = threading.Thread(target=self._read, args=(from_engine,), daemon=True)
        reader.start()

    def _wait_ready(self, from_engine: Any) -> EngineReady:
        try:
            message = from_engine.recv()
        except EOFError:
            message = None
        if isinstance(message, EngineReady):
            return message
        assert self._process is not None
        self._process.join(STOP_TIMEOUT)
        why = message.message if isinstance(message, EngineFailed) else "no reason given"
        raise ModelError(f"the engine process failed to start ({why}); see its log above")

    def stop(self) -> None:
        process = self._process
        if process is None or not process.is_alive():
            return
        self._stopping = True
        with contextlib.suppress(EngineDeadError):  # already exiting
            self._send(Control("shutdown"))
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()

    def pids(self) -> list[int]:
        """Processes holding this engine's GPU state (for a CUDA checkpoint while asleep)."""
        return [self._process.pid] if self._process and self._process.pid else []

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def max_token_chars(self) -> int:
        if self._max_token_chars is None:  # a token's raw string is never shorter than its text
            self._max_token_chars = max(map(len, self.tokenizer.get_vocab()))
        return self._max_token_chars

    @property
    def is_sleeping(self) -> bool:
        return self._asleep

    async def sleep(self) -> None:
        """Wait for the requests in flight, then free the GPU's memory (new requests wait)."""
        async with self._state:
            if self._asleep:
                return
            await self._idle.wait()
            await self._command("sleep")
            self._asleep = True

    async def wake_up(self) -> None:
        async with self._state:
            await self._wake()

    async def _wake(self) -> None:
        if self._asleep:
            await self._command("wake_up")
            self._asleep = False

    # -- requests ------------------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Step]:
        request_id = uuid.uuid4().hex
        async with self._state:
            await self._wake()  # a request wakes a sleeping engine
            stream = self._open(AddRequest(request_id, list(prompt_ids), params))
        finished = False
        with self.metrics.track(len(prompt_ids)) as timer:
            try:
                while not finished:
                    step = await stream.next_step()
                    finished = step.finish_reason is not None
                    timer.tokens(len(step.token_ids))
                    timer.finish_reason = step.finish_reason
                    yield step
            finally:
                self._close(request_id)
                if not finished and self.dead is None:  # the client went away: free its place
                    self._send(AbortRequests([request_id]))

    def _open(self, request: AddRequest) -> _Stream:
        if self.dead is not None:
            raise EngineDeadError(self.dead)
        stream = self._streams[request.request_id] = _Stream()
        self._idle.clear()
        try:
            self._send(request)
        except EngineDeadError:
            self._close(request.request_id)
            raise
        return stream

    def _close(self, request_id: str) -> None:
        del self._streams[request_id]
        if not self._streams:
            self._idle.set()

    def _send(self, message: ToEngine) -> None:
        try:
            with self._send_lock:
                self._to_engine.send(message)
        except OSError as exc:
            raise EngineDeadError(self.dead or f"the engine process is gone ({exc})") from None

    async def _command(self, command: Command) -> ControlDone:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ControlDone] = loop.create_future()
        self._control = (loop, done)
        self._send(Control(command))
        return await done

    # -- the reader thread ---------------------------------------------------------------------

    def _read(self, from_engine: Any) -> None:
        failure = None
        while True:
            try:
                message = from_engine.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, StepOutputs):
                self.metrics.engine_load(
                    message.running, message.waiting, message.kv_cache_usage, message.preemptions
                )
                self._deliver(message.outputs)
            elif isinstance(message, ControlDone) and self._control is not None:
                loop, done = self._control
                loop.call_soon_threadsafe(done.set_result, message)
            elif isinstance(message, GraphsCaptured):
                self.graphs_captured.set()
            elif isinstance(message, EngineFailed):
                failure = message.message
        if not self._stopping:
            self._died(failure)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        woken: dict[asyncio.AbstractEventLoop, list[_Stream]] = {}
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is not None:  # else cancelled meanwhile
                stream.outputs.append(output)
                woken.setdefault(stream.loop, []).append(stream)
        for loop, streams in woken.items():
            _wake_streams(loop, streams)

    def _died(self, failure: str | None) -> None:
        assert self._process is not None
        self._process.join(STOP_TIMEOUT)
        self.dead = f"the engine process died ({failure or f'exit code {self._process.exitcode}'})"
        streams = list(self._streams.values())
        for stream in streams:
            stream.error = self.dead
        for loop in {s.loop for s in streams}:
            _wake_streams(loop, [s for s in streams if s.loop is loop])
        if self._control is not None:
            loop, done = self._control
            loop.call_soon_threadsafe(_fail, done, EngineDeadError(self.dead))
        if self.on_death is not None:
            self.on_death(self.dead)

    # -- tokens --------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            ids: Any = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - templates raise whatever they like on refusals
            raise PromptError(f"the model's chat template refused these messages: {e}") from None
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def decode_stream(self) -> IncrementalDecoder:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        return _RustStream(backend) if backend is not None else WindowDecoder(self.decode)

    def metrics_text(self) -> bytes:
        return self.metrics.text()


class _RustStream:
    """tokenizers' DecodeStream, bound to its tokenizer."""

    def __init__(self, backend: Any) -> None:
        from tokenizers.decoders import DecodeStream

        self.backend, self.stream = backend, DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str | None:
        return self.stream.step(self.backend, token_id)  # type: ignore[no-any-return]


def _wake_streams(loop: asyncio.AbstractEventLoop, streams: list[_Stream]) -> None:
    def wake() -> None:
        for stream in streams:
            stream.ready.set()

    with contextlib.suppress(RuntimeError):  # a closed loop: its requests are gone
        loop.call_soon_threadsafe(wake)


def _fail(done: asyncio.Future[ControlDone], error: Exception) -> None:
    if not done.done():
        done.set_exception(error)
