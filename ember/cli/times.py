"""`--since` values: an age (`30s`, `10m`, `2h`, `7d`) or a moment (`2026-11-01`,
`2026-11-01T09:30`, local time unless it says otherwise)."""

from __future__ import annotations

import re
import time
from datetime import datetime

import typer

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """The Unix time `text` names; typer.BadParameter shows the forms it takes."""
    now = time.time() if now is None else now
    age = _AGE.match(text.strip())
    if age:
        return now - float(age[1]) * _UNIT[age[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an age (30s, 10m, 2h, 7d) nor a date or time "
            "(2026-11-01, 2026-11-01T09:30)"
        ) from None
