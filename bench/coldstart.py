"""Cold starts by tier, end to end: a streamed completion sent while the LLM function has no ready
replica, through the gateway with the endpoint key, to its first token.

One `ember server`; one `ember llm serve` deployment per tier, each idle between rounds:
  fresh    a new replica process (memory_snapshot: false)
  fork     a replica forked from the template that loaded the model (memory_snapshot: true)
  restore  a parked replica woken (gpu_snapshot: true; on a GPU, checkpointed by the driver)
The tiers take turns in each round, so they are measured side by side; the table shows medians
over the rounds, with the phases the server recorded for each cold start (`ember app show`).

    .venv/bin/python bench/coldstart.py [--model DIR] [--runs 5] [--tiers fresh,fork,restore]
    python3 bench/coldstart.py --shape qwen2-0.5b --tokenizer DIR --gpu H100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine
from tests.conftest import RunningServer, start_server
from tests.integration.helpers import ember_cli

TIERS = {
    "fresh": {"memory_snapshot": False, "gpu_snapshot": False},
    "fork": {"memory_snapshot": True, "gpu_snapshot": False},
    "restore": {"memory_snapshot": True, "gpu_snapshot": True},
}
IDLE = {"fresh": {}, "fork": {}, "restore": {"parked": 1}}  # the replicas between rounds
GOALS = {  # issue 11's, by where and what is measured
    "cpu": {"fork": 1.0},
    "gpu qwen2-0.5b": {"fresh": 12.0, "fork": 1.5, "restore": 0.5},
    "gpu llama3-8b": {"restore": 1.5},
}
SCALEDOWN = 2  # seconds idle before a replica stops or parks
PROMPT = "Once upon a time, in a village by the sea,"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def deploy(
    server: RunningServer, tier: str, model: Path | None, gpu: str | None, home: Path
) -> dict[str, str]:
    """`ember llm serve` for one tier (no model: the default one)."""
    say(f"deploying the {tier} tier")
    service = {**TIERS[tier], "scaledown_window": SCALEDOWN, "gpu": gpu}
    config = home / f"{tier}.yaml"
    config.write_text(json.dumps({"service": service}))  # JSON is YAML
    model_args = [str(model)] if model else []
    result = ember_cli("llm", "serve", *model_args, "--name", f"cs-{tier}", "--config",
                       str(config), "--json", env=server.env(), timeout=900)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"deploying the {tier} tier failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[0])  # type: ignore[no-any-return]


def function(server: RunningServer, tier: str) -> dict[str, Any]:
    shown = json.loads(ember_cli("app", "show", f"cs-{tier}", "--json", env=server.env()).stdout)
    return next(f for f in shown["functions"] if f["name"] == "Server")  # type: ignore[no-any-return]


def wait_idle(server: RunningServer, tier: str, limit: float = 300) -> None:
    """Until the tier's function is as a cold start finds it (no replica, or one parked), and its
    template, if it has one, is built."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        info = function(server, tier)
        template_done = info.get("snapshot") in (None, "ready") or "failed" in info["snapshot"]
        if info["replicas"] == IDLE[tier] and template_done:
            return
        time.sleep(0.2)
    raise SystemExit(f"the {tier} tier did not go idle in {limit:.0f} s: {info}")


def first_token(endpoint: dict[str, str]) -> float:
    """Seconds from sending a streamed completion to its first token."""
    import httpx

    body = {"model": endpoint["model"], "prompt": PROMPT, "max_tokens": 4, "stream": True,
            "temperature": 0}  # fmt: skip
    headers = {"Authorization": f"Bearer {endpoint['api_key']}"}
    start = time.perf_counter()
    with httpx.stream("POST", endpoint["base_url"] + "/completions", json=body, headers=headers,
                      timeout=900) as response:  # fmt: skip
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code}: {response.read().decode()[:500]}")
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"]:
                return time.perf_counter() - start
    raise SystemExit("the stream ended without a token")


def gpu_memory_mib() -> int | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return sum(int(line) for line in out.split())


def random_model_folder(shape: str, tokenizer: Path, into: Path) -> Path:
    """A random-weight model of `shape`, saved with the default model's tokenizer (its
    vocabulary size, so every token id exists). Made in a child process, so that this one holds
    no GPU memory while the replicas are measured."""
    folder = into / shape
    child = multiprocessing.get_context("spawn").Process(
        target=_save_random_model, args=(shape, tokenizer, folder)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"making the {shape} model failed")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer / name).exists():
            shutil.copy(tokenizer / name, folder / name)
    return folder


def _save_random_model(shape: str, tokenizer: Path, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from bench.llm_gpu import SHAPES

    fields = {**SHAPES[shape], "vocab_size": len(AutoTokenizer.from_pretrained(tokenizer))}
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)


def measure(args: argparse.Namespace, server: RunningServer, home: Path) -> list[dict[str, Any]]:
    model = args.model
    if args.shape:
        # $EMBER_HOME/models: every replica may read it, also as the server's unprivileged user.
        model = random_model_folder(args.shape, args.tokenizer, server.home / "models")
    tiers = args.tiers.split(",")
    endpoints = {tier: deploy(server, tier, model, args.gpu, home) for tier in tiers}
    for tier in tiers:
        if IDLE[tier]:  # a replica to park first
            say(f"a first request to the {tier} tier, to have a replica to park")
            first_token(endpoints[tier])
    rows = []
    for run in range(args.runs):
        for tier in tiers:
            say(f"run {run + 1}/{args.runs}, {tier}: waiting for every tier to be idle")
            for each in tiers:  # all idle: no tier's replica holds the GPU while another starts
                wait_idle(server, each)
            memory = gpu_memory_mib()
            seconds = first_token(endpoints[tier])
            cold = function(server, tier)["cold_start"] or {}
            row = {"run": run, "tier": tier, "seconds": seconds, "served_by": cold.get("tier"),
                   "phases": cold.get("phases", {}), "gpu_mib_before": memory}  # fmt: skip
            say(json.dumps(row))
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], goals: dict[str, float]) -> str:
    lines = ["| tier | served by | first token, median s | min | max | goal | phases (median s) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for tier in dict.fromkeys(r["tier"] for r in rows):
        mine = [r for r in rows if r["tier"] == tier]
        seconds = [r["seconds"] for r in mine]
        phases = {p: statistics.median(r["phases"].get(p, 0.0) for r in mine)
                  for r in mine for p in r["phases"]}  # fmt: skip
        shown = ", ".join(f"{p} {s:.3f}" for p, s in phases.items())
        served = "/".join(sorted({str(r["served_by"]) for r in mine}))
        goal = f"≤ {goals[tier]} s" if tier in goals else ""
        lines.append(f"| {tier} | {served} | {statistics.median(seconds):.3f} | "
                     f"{min(seconds):.3f} | {max(seconds):.3f} | {goal} | {shown} |")  # fmt: skip
    memory = [r["gpu_mib_before"] for r in rows if r["tier"] == "restore"]
    if memory and memory[0] is not None:
        lines.append(f"\nGPU memory used while every replica was parked: at most {max(memory)} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: the default model)")
    parser.add_argument("--shape", help="a random-weight model of this shape (bench/llm_gpu.py)")
    parser.add_argument("--tokenizer", type=Path, help="with --shape: a folder with a tokenizer")
    parser.add_argument("--gpu", help="the replicas' gpu=, e.g. H100")
    parser.add_argument("--tiers", default="fresh,fork,restore")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    args = parser.parse_args()
    if args.shape and not args.tokenizer:
        parser.error("--shape needs --tokenizer (a folder with the tokenizer to save with it)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = start_server(home / "ember")
        os.environ.update(server.env())
        try:
            rows = measure(args, server, home)
        finally:
            server.stop()
            if args.server_log:
                shutil.copy(server.log_path, args.server_log)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(machine(), f"model: {args.shape or args.model}, gpu: {args.gpu}, runs: {args.runs}")
    print(table(rows, GOALS.get(f"gpu {args.shape}" if args.gpu else "cpu", {})))


if __name__ == "__main__":
    main()
