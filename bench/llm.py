"""Benchmark LLM serving.

cpu: tokens/s and time to first token at concurrency 1, 8 and 32 for the built-in engine and vLLM,
     each served directly and through Ember (`ember llm serve`: gateway, key auth, replica) in the
     same run, alternating, so Ember's overhead is a ratio measured side by side.
gpu: the built-in engine alone on random-weight models shaped like Qwen2-0.5B and Llama-3-8B:
     single-stream and batched decode tokens/s with and without CUDA graphs, next to
     transformers' own `generate`, plus sleep and wake times.

    .venv/bin/python bench/llm.py cpu [--engines builtin,vllm] [--runs 3] [--max-tokens 64]
    python3 bench/llm.py gpu [--shapes qwen2-0.5b,llama3-8b] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ember.llm.config import LLMConfig

PROMPT = "Once upon a time, in a small village by the sea, there lived"  # runs 64 tokens, no EOS
DIRECT_PORT = 8101
EMBER_PORT = 8102  # the embedded server's; not 8765, where ./scripts/serve may be running


# -- CPU: direct vs through Ember ----------------------------------------------------------------


async def one_request(client: Any, url: str, model: str, max_tokens: int) -> tuple[float, int]:
    """Time to first token and completion tokens of one streamed completion."""
    body = {
        "model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    start = time.perf_counter()
    ttft, tokens = float("nan"), 0
    async with client.stream("POST", url + "/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"] and ttft != ttft:
                ttft = time.perf_counter() - start
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return ttft, tokens


async def load(
    url: str, key: str, model: str, concurrency: int, max_tokens: int
) -> dict[str, float]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:
        await one_request(client, url, model, 4)  # warm: a scaled-to-zero endpoint starts here
        start = time.perf_counter()
        results = await asyncio.gather(
            *(one_request(client, url, model, max_tokens) for _ in range(concurrency))
        )
        wall = time.perf_counter() - start
    return {
        "tokens_per_s": sum(tokens for _, tokens in results) / wall,
        "ttft_s": statistics.median(ttft for ttft, _ in results),
    }


@contextlib.contextmanager
def direct(engine: str, config: LLMConfig) -> Iterator[str]:
    """The engine's own server, with no Ember in front: the baseline."""
    if engine == "vllm":
        from ember.llm.engines.vllm import VllmEngine

        vllm = VllmEngine(config, port=DIRECT_PORT)
        vllm.start()
        try:
            yield f"http://127.0.0.1:{DIRECT_PORT}/v1"
        finally:
            vllm.stop()
        return
    command = [sys.executable, __file__, "serve-builtin", config.model_dump_json()]
    process = subprocess.Popen(command)
    try:
        wait_for(f"http://127.0.0.1:{DIRECT_PORT}/health", process)
        yield f"http://127.0.0.1:{DIRECT_PORT}/v1"
    finally:
        process.terminate()
        process.wait()


def serve_builtin(config_json: str) -> None:
    """The built-in engine under plain uvicorn (the `direct` baseline)."""
    import uvicorn

    from ember.llm.engines.builtin.client import BuiltinEngine
    from ember.llm.serving import openai_app

    engine = BuiltinEngine(LLMConfig.model_validate_json(config_json))
    engine.start()
    uvicorn.run(openai_app(engine), host="127.0.0.1", port=DIRECT_PORT, log_level="warning")


@contextlib.contextmanager
def through_ember(
    engine: str, model_dir: Path, home: Path, extra: list[str] | None = None
) -> Iterator[tuple[str, str]]:
    command = [sys.executable, "-m", "ember.cli.main", "llm", "serve", str(model_dir), "--json"]
    command += ["--engine", engine, "--name", f"bench-{engine}", "--port", str(EMBER_PORT)]
    command += extra or []
    process = subprocess.Popen(
        command, env={**os.environ, "EMBER_HOME": str(home)}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        yield info["base_url"], info["api_key"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait()


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    while process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url}: the server exited")


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    from ember.llm.models import ensure_default_model

    home = Path(tempfile.mkdtemp(prefix="ember-bench-"))
    model_dir = Path(args.model) if args.model else ensure_default_model(home / "models")
    config = LLMConfig.parse({"model": {"name": str(model_dir)}}, "bench")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, Any] = {}
    for engine in args.engines.split(","):
        with direct(engine, config) as direct_url, through_ember(engine, model_dir, home) as ember:
            samples: dict[str, list[dict[str, float]]] = {}
            for run in range(args.runs):
                for concurrency in concurrencies:
                    for path, (url, key) in (("direct", (direct_url, "none")), ("ember", ember)):
                        figures = asyncio.run(
                            load(url, key, config.served_model_name, concurrency, args.max_tokens)
                        )
                        samples.setdefault(f"{engine} c{concurrency} {path}", []).append(figures)
                        print(
                            f"run {run + 1} {engine} c{concurrency} {path}: {figures}", flush=True
                        )
            for name, runs in samples.items():
                results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return results


def cpu_table(results: dict[str, Any]) -> str:
    lines = [
        "| engine | concurrency | direct tok/s | Ember tok/s | Ember / direct | direct TTFT "
        "| Ember TTFT |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        engine, concurrency, path = name.split()
        if path != "direct":
            continue
        ember = results[f"{engine} {concurrency} ember"]
        ratio = ember["tokens_per_s"] / figures["tokens_per_s"]
        lines.append(
            f"| {engine} | {concurrency[1:]} | {figures['tokens_per_s']:.1f} | "
            f"{ember['tokens_per_s']:.1f} | {ratio:.3f} | {figures['ttft_s'] * 1000:.0f} ms | "
            f"{ember['ttft_s'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


# -- GPU: see bench/llm_gpu.py ---------------------------------------------------------------------


def gpu(args: argparse.Namespace) -> dict[str, Any]:
    import llm_gpu

    out = llm_gpu.out_dir()
    results: dict[str, Any] = {}
    parts = args.parts.split(",")
    if "check" in parts:
        results["check"] = llm_gpu.check(out)
        print("check", results["check"], flush=True)
    if "engine" in parts:
        batches = [int(b) for b in args.batches.split(",")]
        results["engine"] = llm_gpu.engine_shapes(args.shapes.split(","), batches, args.new_tokens)
    if "serve" in parts:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        results["serve"] = llm_gpu.serve(
            args.serve_shape, Path(args.tokenizer), concurrencies, args.new_tokens, args.runs,
            through_ember,
        )  # fmt: skip
        print(llm_gpu.serve_table(results["serve"]), flush=True)
    (out / "llm_gpu.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    on_cpu = sub.add_parser("cpu")
    on_cpu.add_argument("--engines", default="builtin,vllm")
    on_cpu.add_argument("--concurrency", default="1,8,32")
    on_cpu.add_argument("--runs", type=int, default=3)
    on_cpu.add_argument("--max-tokens", type=int, default=64)
    on_cpu.add_argument("--model", help="a model folder (default: the default model)")
    on_gpu = sub.add_parser("gpu")
    on_gpu.add_argument("--parts", default="check,engine,serve")
    on_gpu.add_argument("--shapes", default="qwen2-0.5b,llama3-8b")
    on_gpu.add_argument("--batches", default="1,8,32,128")
    on_gpu.add_argument("--concurrency", default="1,8,32,128")
    on_gpu.add_argument("--runs", type=int, default=2)
    on_gpu.add_argument("--new-tokens", type=int, default=128)
    on_gpu.add_argument("--tokenizer", help="a folder with tokenizer files (for serve)")
    on_gpu.add_argument("--serve-shape", default="qwen2-0.5b")
    for each in (on_cpu, on_gpu):
        each.add_argument("--json", help="also write the figures to this file")
    serve = sub.add_parser("serve-builtin")  # internal: the direct baseline's server
    serve.add_argument("config_json")
    args = parser.parse_args()
    if args.command == "serve-builtin":
        serve_builtin(args.config_json)
        return
    results = cpu(args) if args.command == "cpu" else gpu(args)
    if args.command == "cpu":
        print(cpu_table(results))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
