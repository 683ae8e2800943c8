"""Turn a growing list of token ids into text deltas, stopping at the request's stop strings.

Text is held back while it could still be the start of a stop string, or while the last token
ends inside a multi-byte character, so a stream never shows what the full answer would not.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence


class Detokenizer:
    def __init__(self, decode: Callable[[list[int]], str], stop: list[str]) -> None:
        self.decode, self.stop = decode, stop
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False

    def add(self, token_ids: list[int]) -> str:
        """The text that became final with these tokens; sets `stopped` at a stop string."""
        self.token_ids += token_ids
        self.text = self.decode(self.token_ids)
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            return self._emit(cut)
        safe = len(self.text) - self.holdback
        if self.text.endswith(REPLACEMENT):
            safe = min(safe, len(self.text) - 1)
        return self._emit(safe)

    def flush(self) -> str:
        """Everything not yet handed out, once the request is over."""
        return self._emit(len(self.text))

    def _first_stop(self) -> int | None:
        start = max(0, self.emitted - self.holdback)
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(found, default=None)

    def _emit(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : end], end
        return delta
