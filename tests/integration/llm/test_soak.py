"""The soak: 20 streams against `ember llm serve` for ten minutes, with no error, no replica
replaced and memory that stays flat. Not in the default run (`pytest -m soak` runs it);
EMBER_SOAK_SECONDS shortens it."""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import alive, descendants, free_port
from tests.integration.llm.test_llm_serve import start_llm_serve

SECONDS = float(os.environ.get("EMBER_SOAK_SECONDS", "600"))
pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 300)]  # + start and teardown

STREAMS = 20
WARM_UP = 60.0  # seconds before memory counts: caches, allocator pools and the like fill up
SAMPLE_EVERY = 10.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_twenty_streams_for_ten_minutes(model_dir: Path, tmp_path: Path) -> None:
    seconds = SECONDS
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("service:\n  max_concurrent_requests: 32\n")
    config = str(home / "config.yaml")
    process, endpoint = start_llm_serve(
        home, str(model_dir), "--config", config, "--port", str(free_port())
    )
    counts = {"completions": 0, "tokens": 0}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def stream(index: int) -> None:
        client = endpoint.client().with_options(timeout=300)
        while time.monotonic() < deadline:
            try:
                chunks = client.chat.completions.create(
                    model=endpoint.model, stream=True, temperature=0.7, max_tokens=64,
                    messages=[{"role": "user", "content": f"Tell me story number {index}."}],
                    stream_options={"include_usage": True},
                )  # fmt: skip
                *_, last = chunks
                assert last.usage is not None
                with lock:
                    counts["tokens"] += last.usage.completion_tokens
                    counts["completions"] += 1
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
        client.close()

    try:
        endpoint.client().chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )  # the replica is up
        processes = descendants(process.pid)  # server (this one), replica, engine
        watched = [process.pid, *processes]
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        samples: list[tuple[float, dict[int, float]]] = []
        while any(thread.is_alive() for thread in threads):
            samples.append((time.monotonic() - started, {p: rss_mib(p) for p in watched}))
            threads[0].join(SAMPLE_EVERY)
        for thread in threads:
            thread.join()
        gone = [p for p in processes if not alive(p)]
        new = [p for p in descendants(process.pid) if p not in processes]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.stdout is not None
        process.stdout.close()

    settled = [s for t, s in samples if t >= min(WARM_UP, seconds / 3)]
    first, last = settled[: len(settled) // 3], settled[-(len(settled) // 3) :]
    growth = {
        pid: statistics.median(s[pid] for s in last) - statistics.median(s[pid] for s in first)
        for pid in watched
    }
    report = {
        "seconds": seconds, "streams": STREAMS, "completions": counts["completions"],
        "tokens_per_s": counts["tokens"] / seconds, "errors": len(errors),
        "rss_mib_first_third": {p: statistics.median(s[p] for s in first) for p in watched},
        "rss_mib_growth": growth,
    }  # fmt: skip
    print("soak:", json.dumps(report))
    assert not errors, errors[:5]
    assert not gone and not new, f"replaced during the soak: {gone} by {new}"
    assert counts["completions"] >= STREAMS
    for pid, mib in growth.items():
        assert mib < 0.05 * report["rss_mib_first_third"][pid] + 16, f"process {pid} grew {mib} MiB"
