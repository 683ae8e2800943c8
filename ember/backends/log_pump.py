"""Replica output into log lines, whatever it prints: never blocks the replica, never dies.

The pump reads the replica's stdout and stderr pipe in chunks, not lines, so it keeps draining
the pipe (a replica that fills it blocks in `write()`) whatever the output looks like:
- a line is logged as a terminal would leave it: what follows a `\\r` replaces what came before,
  so a tqdm bar of thousands of updates is one line, its last state;
- a line longer than MAX_LINE bytes keeps its first MAX_LINE, and a second line says how much
  was cut (one 10 MB `print` is not 640 log lines);
- bytes that are not UTF-8 are replaced, not fatal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ember.backends.base import LogCallback

READ_CHUNK = 64 * 1024
MAX_LINE = 16 * 1024


async def pump_logs(stream: asyncio.StreamReader, on_log: LogCallback) -> None:
    """Log `stream`'s lines until it ends."""
    line = _Line()
    while chunk := await stream.read(READ_CHUNK):
        *ended, rest = chunk.split(b"\n")
        for piece in ended:
            line.add(piece)
            line.log(on_log)
            line = _Line()
        line.add(rest)
    if line.head or line.cut:
        line.log(on_log)


@dataclass
class _Line:
    """One line as it builds up: its first MAX_LINE bytes since the last `\\r`, and how many
    more were cut."""

    head: bytes = b""
    cut: int = 0
    returned: bool = False  # a `\r` came last: what comes next starts the line over

    def add(self, data: bytes) -> None:
        for index, piece in enumerate(data.split(b"\r")):
            self.returned = self.returned or index > 0
            if not piece:
                continue
            if self.returned:
                self.head, self.cut, self.returned = b"", 0, False
            kept = piece[: MAX_LINE - len(self.head)]
            self.head += kept
            self.cut += len(piece) - len(kept)

    def log(self, on_log: LogCallback) -> None:
        on_log(self.head.decode(errors="replace"))
        if self.cut:  # said apart: the redactor still sees a secret cut at the line's end
            on_log(f"[ember] the line above was cut at {MAX_LINE:,} bytes; {self.cut:,} more")
