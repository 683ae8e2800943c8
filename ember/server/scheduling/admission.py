"""Admission: the one front door of web requests and `.remote()` inputs alike.

Each input is admitted against its pool's queue bound (past it, 503 with Retry-After), then
against the budgets of its app and of the server (budgets.py: once one is spent, only an input
that a ready replica can take at once is admitted; others get 402), with the caller's identity at
hand.
"""

from __future__ import annotations

from ember.server.budgets import Budgets
from ember.server.pools import Pool
from ember.server.store.base import TokenRecord

Principal = TokenRecord  # who is calling: an admin or replica token, or an endpoint key
ANONYMOUS = TokenRecord(id="", name="anonymous", kind="anonymous", app=None)  # public endpoints


class Overloaded(Exception):
    """503: the function's queue is full."""


def admit(principal: Principal, pool: Pool, max_queued: int, budgets: Budgets) -> None:
    if pool.queue.waiting >= max_queued:
        raise Overloaded(
            f"{pool.key.function} has {pool.queue.waiting} inputs waiting for a "
            "replica (the limit); retry shortly"
        )
    budgets.admit(pool)
