"""Benchmark the gateway against a trivial upstream, direct vs through Ember in the same run:
added latency (p50/p99) for small requests at concurrency 1 and 32, the event rate of a
1,000-event SSE response; and the server's CPU time per small request (concurrency 1) and per
SSE event, which unlike latencies hardly move when other work shares the machine.

    .venv/bin/python bench/gateway.py [--runs 5] [--requests 500] [--no-sandbox] [--no-metering]

The upstream is sandboxed (its own network namespace, reached through pasta) unless the server
runs with `--no-sandbox`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import httpx
from common import (
    add_server_options,
    deployed,
    percentile,
    print_runs,
    server_options,
    web_server_port,
)


async def latencies(url: str, requests: int, concurrency: int) -> list[float]:
    results: list[float] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        for _ in range(20):
            await client.get(url)  # warm the connections

        async def worker(count: int) -> None:
            for _ in range(count):
                start = time.perf_counter()
                response = await client.get(url)
                results.append(time.perf_counter() - start)
                assert response.status_code == 200

        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return results


async def sse_rate(url: str) -> float:
    async with httpx.AsyncClient(timeout=60) as client:
        start = time.perf_counter()
        events = 0
        async with client.stream("GET", url, params={"n": 1000}) as response:
            async for line in response.aiter_lines():
                events += line.startswith("data:")
        assert events == 1000
        return events / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads alive now, to the nanosecond (/proc/PID/stat counts in
    ticks of 10 ms, too coarse for a second of streaming)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def server_cpu_per_event(url: str, server_pid: int) -> float:
    """The server's CPU time per SSE event streamed through it (µs): unlike an event rate, it
    hardly moves when other work shares the machine."""
    before = cpu_seconds(server_pid)
    events = 0
    for _ in range(10):
        events += 1000
        await sse_rate(url)
    return (cpu_seconds(server_pid) - before) / events * 1e6


async def one_run(direct: str, gateway: str, requests: int, server_pid: int) -> dict[str, float]:
    row: dict[str, float] = {}
    for concurrency in (1, 32):
        d = await latencies(direct + "/small", requests, concurrency)
        before = cpu_seconds(server_pid)
        g = await latencies(gateway + "/small", requests, concurrency)
        if concurrency == 1:  # its 20 warm-up requests too
            row["c1_server_cpu_us"] = (cpu_seconds(server_pid) - before) / (20 + requests) * 1e6
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            row[f"c{concurrency}_direct_{name}"] = percentile(d, q) * 1e3
            row[f"c{concurrency}_gateway_{name}"] = percentile(g, q) * 1e3
            row[f"c{concurrency}_added_{name}"] = (percentile(g, q) - percentile(d, q)) * 1e3
    pairs = [(await sse_rate(direct + "/sse"), await sse_rate(gateway + "/sse")) for _ in range(5)]
    row.update(
        sse_direct=statistics.median(d for d, _ in pairs),
        sse_gateway=statistics.median(g for _, g in pairs),
        sse_ratio=statistics.median(g / d for d, g in pairs),
        sse_server_cpu_us_per_event=await server_cpu_per_event(gateway + "/sse", server_pid),
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--json", action="store_true", help="Print each run's row as JSON.")
    add_server_options(parser)
    args = parser.parse_args()
    with deployed("gateway_app.py", **server_options(args)) as (server, module):
        gateway = f"{server.url}/bench-gateway/upstream"
        httpx.get(gateway + "/small", timeout=120)  # scale from zero once
        pid = server.process.pid
        direct = f"http://127.0.0.1:{web_server_port(module.PORT, pid)}"
        runs = [asyncio.run(one_run(direct, gateway, args.requests, pid)) for _ in range(args.runs)]
    print_runs(runs, args.json, f"{args.requests} small GETs per concurrency level per run")


if __name__ == "__main__":
    main()
