"""Admission: bound each function's queue; past the bound, 503 with Retry-After."""

from __future__ import annotations

from ember.server.pools import Pool


class Overloaded(Exception):
    """503: the function's queue is full."""


def admit(pool: Pool, max_queued: int) -> None:
    if pool.queue.waiting >= max_queued:
        raise Overloaded(
            f"{pool.key.function} has {pool.queue.waiting} requests waiting for a "
            "replica (the limit); retry shortly"
        )
