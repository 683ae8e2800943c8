"""The built-in engine on a GPU (`bench/llm.py gpu`): random-weight models of real shapes.

check:   greedy tokens of the engine (batched, CUDA graphs, float32) against transformers'
         `generate` on the same random model.
engine:  the engine alone per shape: start (to ready, then to every CUDA graph captured while
         idle), tokens/s and TTFT at each batch size, sleep and wake times, and the same greedy
         tokens before sleep and after wake.
serve:   the same prompts, at each concurrency, sent to the engine alone (its Python API, in this
         process) and through Ember (`ember llm serve`: server, gateway, key, replica), alternating,
         so the ratio is measured side by side.

This process never touches CUDA itself: engines fork their own processes, which do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ember.llm.config import LLMConfig
from ember.llm.engines.base import SamplingParams
from ember.llm.engines.builtin.client import BuiltinEngine

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2-0.5b": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True,
    },
    "llama3-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
    },
    "tiny": {  # a smoke test of this script on a machine without a GPU
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 1000, "max_position_embeddings": 2048,
    },
}  # fmt: skip
Request = Callable[[list[int]], Awaitable[tuple[float, float, int]]]  # -> ttft, seconds, tokens
Client = Callable[[], Request]  # a request function per concurrent stream (its own connection)
REQUEST_TIMEOUT = 60.0  # seconds: a request that takes longer fails the level, loudly
GRAPHS_TIMEOUT = 180.0  # seconds for an idle engine to capture its CUDA graphs


def random_model(shape: str, device: Any, dtype: Any = None, **overrides: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {**SHAPES[shape], **overrides}
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_loader(shape: str) -> Any:
    """Builds a random model of `shape` in the engine process; no end-of-sequence token."""
    return lambda device: (random_model(shape, device), [])


def gpu_option() -> str | None:
    """`service.gpu`: "any" where an NVIDIA device is present, checked without CUDA (this
    process forks the engines, which must be the first to touch it)."""
    return "any" if Path("/dev/nvidia0").exists() else None


def engine_config(name: str, max_seqs: int, memory: float = 0.85) -> LLMConfig:
    service = {"max_concurrent_requests": max_seqs, "fast_boot": False, "gpu": gpu_option()}
    return LLMConfig.parse(
        {
            "model": {"name": name, "max_model_len": 1024, "gpu_memory_utilization": memory},
            "service": service,
        },
        "bench",
    )


def prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 100) for _ in range(length)] for _ in range(count)]


def engine_client(engine: BuiltinEngine, new_tokens: int) -> Client:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

    async def one(prompt: list[int]) -> tuple[float, float, int]:
        start = time.perf_counter()
        ttft, tokens = float("nan"), 0
        async for step in engine.generate(prompt, params):
            if tokens == 0:
                ttft = time.perf_counter() - start
            tokens += len(step.token_ids)
        return ttft, time.perf_counter() - start, tokens

    return lambda: one


async def level(client: Client, batch: list[list[int]], rounds: int = 1) -> dict[str, float]:
    """len(batch) streams at once, each sending `rounds` requests one after the other (a closed
    loop): tokens/s, TTFT p50/p99, and the slowest request over the median."""

    async def stream(index: int) -> list[tuple[float, float, int]]:
        request = client()
        results = []
        for round_ in range(rounds):
            prompt = batch[(index + round_) % len(batch)]
            async with asyncio.timeout(REQUEST_TIMEOUT):
                results.append(await request(prompt))
        return results

    start = time.perf_counter()
    streams = await asyncio.gather(*(stream(i) for i in range(len(batch))))
    wall = time.perf_counter() - start
    results = [r for s in streams for r in s]
    ttfts = sorted(r[0] for r in results)
    durations = [r[1] for r in results]
    return {
        "tokens_per_s": sum(r[2] for r in results) / wall,
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "slowest_over_median": max(durations) / statistics.median(durations),
        "tokens": sum(r[2] for r in results),
    }


# -- check: greedy tokens against generate -------------------------------------------------------


def check(out: Path, count: int = 6, new_tokens: int = 24) -> dict[str, Any]:
    """float32, so that rounding does not decide between near-equal logits."""
    reference_file = out / "reference.json"
    batch = prompts(count, 40, 1000, seed=1)

    def load(device: Any) -> tuple[Any, list[int]]:
        import torch

        model = random_model("qwen2-0.5b", device, torch.float32, initializer_range=0.1)
        references = [
            model.generate(
                torch.tensor([p], device=device), max_new_tokens=new_tokens, do_sample=False
            )[0, len(p) :].tolist()
            for p in batch
        ]
        reference_file.write_text(json.dumps(references))
        return model, []

    engine = BuiltinEngine(engine_config("check", 16), load=load)
    engine.start()
    try:

        async def tokens_of(prompt: list[int]) -> list[int]:
            params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
            return [t async for step in engine.generate(prompt, params) for t in step.token_ids]

        async def run() -> list[list[int]]:
            await tokens_of(batch[0])  # alone first, then all at once
            return list(await asyncio.gather(*(tokens_of(p) for p in batch)))

        got = asyncio.run(run())
    finally:
        engine.stop()
    expected = json.loads(reference_file.read_text())
    matching = [_common_prefix(g, e) for g, e in zip(got, expected, strict=True)]
    return {"equal": sum(m == new_tokens for m in matching), "of": count, "prefixes": matching}


def _common_prefix(a: list[int], b: list[int]) -> int:
    pairs = zip(a, b, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


# -- engine: the engine alone, per shape ---------------------------------------------------------


def engine_shapes(shapes: list[str], batches: list[int], new_tokens: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for shape in shapes:
        start = time.perf_counter()
        engine = BuiltinEngine(engine_config(shape, max(batches)), load=random_loader(shape))
        engine.start()
        assert engine.info is not None
        results[f"{shape} start_s"] = time.perf_counter() - start  # ready: graphs come after
        if not engine.graphs_captured.wait(GRAPHS_TIMEOUT):
            raise SystemExit(f"{shape}: the CUDA graphs were not captured in {GRAPHS_TIMEOUT} s")
        results[f"{shape} graphs_captured_s"] = time.perf_counter() - start
        results[f"{shape} info"] = repr(engine.info)
        client = engine_client(engine, new_tokens)
        batch = prompts(max(batches), 128, SHAPES[shape]["vocab_size"])
        try:
            asyncio.run(level(client, batch[:2]))  # warm-up
            for size in batches:
                results[f"{shape} bs{size}"] = figures = asyncio.run(level(client, batch[:size]))
                print(shape, size, figures, flush=True)
            results.update(_sleep_wake(engine, shape, batch[0]))
        finally:
            engine.stop()
        print(shape, {k: v for k, v in results.items() if k.startswith(shape)}, flush=True)
    return results


def _sleep_wake(engine: BuiltinEngine, shape: str, prompt: list[int]) -> dict[str, Any]:
    async def tokens_of() -> tuple[float, list[int]]:
        params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
        start, first, tokens = time.perf_counter(), float("nan"), []
        async for step in engine.generate(prompt, params):
            first = first if tokens else time.perf_counter() - start
            tokens += step.token_ids
        return first, tokens

    async def timed(call: Callable[[], Awaitable[None]]) -> float:
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    async def run() -> dict[str, Any]:
        _, before = await tokens_of()
        first_sleep = await timed(engine.sleep)  # pins the host buffer once
        await timed(engine.wake_up)
        sleep = await timed(engine.sleep)
        wake = await timed(engine.wake_up)
        ttft, after = await tokens_of()
        return {
            f"{shape} first_sleep_s": first_sleep, f"{shape} sleep_s": sleep,
            f"{shape} wake_s": wake, f"{shape} ttft_after_wake_ms": 1000 * ttft,
            f"{shape} same_tokens_after_wake": before == after,
        }  # fmt: skip

    return asyncio.run(run())


# -- serve: the engine alone next to Ember -------------------------------------------------------


def make_folder(shape: str, folder: Path, tokenizer: Path) -> None:
    """A random model of `shape` saved with a real tokenizer (the vocabulary cut to its size)."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import sys, torch; sys.path.insert(0, {root!r}); from bench.llm_gpu import random_model\n"
        "from transformers import AutoTokenizer\n"
        f"vocab = len(AutoTokenizer.from_pretrained({str(tokenizer)!r}))\n"
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
        f"model = random_model({shape!r}, device, vocab_size=vocab)\n"
        f"model.save_pretrained({str(folder)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for f in tokenizer.iterdir():
        if f.name not in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy(f, folder / f.name)


def http_client(base_url: str, key: str, model: str, new_tokens: int) -> Client:
    """Streamed completions on one kept-alive connection per stream, read in big chunks and parsed
    once at the end: a client that parses each event (httpx, openai) runs out of CPU at c128."""
    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    def connection() -> Request:
        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def one(prompt: list[int]) -> tuple[float, float, int]:
            body = json.dumps({
                "model": model, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
            }).encode()  # fmt: skip
            head = (
                f"POST {url.path}/completions HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            start = time.perf_counter()
            if not streams:
                streams.append(await asyncio.open_connection(host, port))
            reader, writer = streams[0]
            writer.write(head.encode() + body)
            ttft, received, tail = float("nan"), [], b""
            while not tail.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the body
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"connection closed: {b''.join(received)[-500:]!r}")
                if ttft != ttft and b"data: " in chunk:
                    ttft = time.perf_counter() - start
                received.append(chunk)
                tail = (tail + chunk)[-7:]
            response = b"".join(received)
            if not response.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(response[:500].decode(errors="replace"))
            usage = re.search(rb'"completion_tokens":(\d+)', response)
            return ttft, time.perf_counter() - start, int(usage.group(1)) if usage else 0

        return one

    return connection


def serve(
    shape: str,
    tokenizer: Path,
    concurrencies: list[int],
    new_tokens: int,
    runs: int,
    ember: Any,
    rounds: int = 3,
) -> dict[str, Any]:
    """`ember` is bench/llm.py's `through_ember`: an `ember llm serve` for the whole run."""
    home = Path(tempfile.mkdtemp(prefix="ember-bench-"))
    folder = home / shape
    make_folder(shape, folder, tokenizer)
    top = max(concurrencies)
    config_file = home / "config.yaml"
    config_file.write_text(
        f"model:\n  max_model_len: 1024\n  gpu_memory_utilization: 0.4\nservice:\n"
        f"  max_concurrent_requests: {top}\n  fast_boot: false\n  scaledown_window: 900\n"
        + (f"  gpu: {gpu_option()}\n" if gpu_option() else "")
    )
    config = LLMConfig.load(config_file, {"model.name": str(folder)})
    engine = BuiltinEngine(config)
    engine.start()
    engine.graphs_captured.wait(GRAPHS_TIMEOUT)
    batch = prompts(top, 128, engine.vocab_size)
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        with ember("builtin", folder, home, ["--config", str(config_file)]) as (url, key):
            clients = {
                "engine": engine_client(engine, new_tokens),
                "ember": http_client(url, key, config.served_model_name, new_tokens),
            }
            asyncio.run(level(clients["ember"], batch[:1]))  # starts the replica
            wait_for_graphs(home / "ember.db")

            async def measure(path: str, size: int) -> dict[str, float]:
                await level(clients[path], batch[:size])  # warm-up: connections, slots
                busy = cpu_seconds()
                figures = await level(clients[path], batch[:size], rounds)
                used = cpu_seconds()
                wall = figures["tokens"] / figures["tokens_per_s"]
                return figures | {f"cpu {k}": (used[k] - busy.get(k, 0)) / wall for k in used}

            try:
                for run in range(runs):
                    for size in concurrencies:
                        for path in ("engine", "ember"):
                            figures = asyncio.run(measure(path, size))
                            samples.setdefault(f"c{size} {path}", []).append(figures)
                            print(f"run {run + 1} c{size} {path}: {figures}", flush=True)
            finally:  # the replicas' output and the platform's events, for when something failed
                (out_dir() / "ember_logs.txt").write_text(app_logs(home / "ember.db"))
    finally:
        engine.stop()
    return {name: _medians(runs_) for name, runs_ in samples.items()}


def wait_for_graphs(database: Path) -> None:
    """Until the replica's engine says its CUDA graphs are captured (it does so while idle)."""
    deadline = time.monotonic() + GRAPHS_TIMEOUT
    while "CUDA graphs captured" not in app_logs(database):
        if time.monotonic() > deadline:
            raise SystemExit(f"the replica's CUDA graphs were not captured in {GRAPHS_TIMEOUT} s")
        time.sleep(0.5)


def app_logs(database: Path) -> str:
    """Every log line in the embedded server's store (its admin token stays inside it)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("select ts, replica, text from logs order by ts").fetchall()
    return "".join(f"{time.strftime('%H:%M:%S', time.localtime(t))} {r} {x}\n" for t, r, x in rows)


def cpu_seconds() -> dict[str, float]:
    """CPU time so far of this process and of its descendants, by role (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    roles: dict[str, float] = {}

    def visit(pid: int, role: str) -> None:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            roles[role] = roles.get(role, 0.0) + seconds
        for child in children.get(pid, []):
            visit(child, _role(child, role))

    visit(os.getpid(), "bench")
    return roles


def _role(pid: int, parent: str) -> str:
    """What a process does, from its name and its parent's role: the embedded server, the
    pool's template (replicas fork from it), a replica, or an engine process."""
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "ember-engine":
            return "engine (alone)" if parent == "bench" else "engine (replica's)"
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"ember.cli.main" in command:
            return "server"
        if b"ember.runtime.template" in command and parent == "server":
            return "template"
        if b"ember.runtime.replica" in command or parent == "template":
            return "replica"
    return parent


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}


def serve_table(results: dict[str, Any]) -> str:
    lines = [
        "| c | engine alone tok/s | through Ember tok/s | ratio | TTFT p50 alone / Ember (ms) "
        "| TTFT p99 alone / Ember (ms) | slowest / median, Ember |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, alone in results.items():
        if not name.endswith(" engine"):
            continue
        size = name.split()[0]
        via = results[f"{size} ember"]
        lines.append(
            f"| {size[1:]} | {alone['tokens_per_s']:,.0f} | {via['tokens_per_s']:,.0f} | "
            f"{via['tokens_per_s'] / alone['tokens_per_s']:.3f} | "
            f"{alone['ttft_p50_ms']:.1f} / {via['ttft_p50_ms']:.1f} | "
            f"{alone['ttft_p99_ms']:.1f} / {via['ttft_p99_ms']:.1f} | "
            f"{via['slowest_over_median']:.2f} |"
        )
    return "\n".join(lines)


def out_dir() -> Path:
    out = Path(os.environ.get("OUT", tempfile.mkdtemp(prefix="ember-bench-out-")))
    out.mkdir(parents=True, exist_ok=True)
    return out
