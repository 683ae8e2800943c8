"""Prometheus metrics of one engine: time to first token, inter-token gaps, tokens, queues, and
the engine's own view of its batch (requests running and waiting, KV cache in use)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "ember_llm_time_to_first_token_seconds", "Request arrival to first token.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inter_token = Histogram(
            "ember_llm_inter_token_latency_seconds", "Time between two tokens of one request.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("ember_llm_prompt_tokens", "Prompt tokens.", registry=r)
        self.generation_tokens = Counter(
            "ember_llm_generation_tokens", "Generated tokens.", registry=r
        )
        self.requests = Counter(
            "ember_llm_requests", "Finished requests.", ["finish_reason"], registry=r
        )
        self.running = Gauge("ember_llm_requests_running", "Requests decoding.", registry=r)
        self.waiting = Gauge(
            "ember_llm_requests_waiting", "Requests before their first token.", registry=r
        )
        self.batch_running = Gauge(
            "ember_llm_engine_running", "Requests in the engine's batch.", registry=r
        )
        self.batch_waiting = Gauge(
            "ember_llm_engine_waiting", "Requests the engine has not admitted yet.", registry=r
        )
        self.kv_cache_usage = Gauge(
            "ember_llm_kv_cache_usage", "Share of the KV cache in use (0 to 1).", registry=r
        )
        self.preemptions = Gauge(
            "ember_llm_preemptions",
            "Requests put back to wait because the KV cache was full (since the engine started).",
            registry=r,
        )

    @contextmanager
    def track(self, prompt_tokens: int) -> Iterator[RequestTimer]:
        """Time one request; the caller reports each batch of new tokens to the timer."""
        self.prompt_tokens.inc(prompt_tokens)
        timer = RequestTimer(self)
        self.waiting.inc()
        try:
            yield timer
        finally:
            (self.running if timer.started else self.waiting).dec()
            self.requests.labels(timer.finish_reason or "cancelled").inc()

    def engine_load(
        self, running: int, waiting: int, kv_cache_usage: float, preemptions: int
    ) -> None:
        self.batch_running.set(running)
        self.batch_waiting.set(waiting)
        self.kv_cache_usage.set(kv_cache_usage)
        self.preemptions.set(preemptions)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics
        self.arrival = self.last = time.perf_counter()
        self.started = False
        self.finish_reason: str | None = None

    def tokens(self, count: int) -> None:
        if count == 0:
            return
        now = time.perf_counter()
        self.metrics.generation_tokens.inc(count)
        if not self.started:
            self.started = True
            self.metrics.ttft.observe(now - self.arrival)
            self.metrics.waiting.dec()
            self.metrics.running.inc()
            count -= 1  # the first token has no gap before it
        for _ in range(count):  # tokens that arrive together share the gap
            self.metrics.inter_token.observe((now - self.last) / count)
        self.last = now
