"""Turn a growing list of token ids into text deltas, stopping at the request's stop strings.

Decoding is incremental: each token costs a constant amount of work, whatever the length of the
answer so far (tokenizers' `DecodeStream`, or a short window of tokens for tokenizers without a
Rust backend). Text is held back while it could still be the start of a stop string, and while
the last tokens end inside a multi-byte character, so a stream never shows what the full answer
would not; `flush` hands out the rest, decoded from all the tokens at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence
Decode = Callable[[list[int]], str]


class IncrementalDecoder(Protocol):
    def step(self, token_id: int) -> str | None:
        """The text this token completes; None while it ends inside a character."""


class WindowDecoder:
    """Incremental decoding with any `decode`: decode a few recent tokens, keep what they add.

    vLLM's prefix/read-offset scheme: text is read off the window of tokens since the last piece
    that was handed out, with the tokens just before it as context (spaces and merges depend on
    neighbours), so each step decodes a handful of tokens.
    """

    def __init__(self, decode: Decode) -> None:
        self.decode = decode
        self.token_ids: list[int] = []
        self.prefix = self.read = 0  # window start; tokens before `read` are handed out

    def step(self, token_id: int) -> str | None:
        self.token_ids.append(token_id)
        before = self.decode(self.token_ids[self.prefix : self.read])
        after = self.decode(self.token_ids[self.prefix :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return None
        self.prefix, self.read = self.read, len(self.token_ids)
        return after[len(before) :]


class Detokenizer:
    def __init__(self, stream: IncrementalDecoder, decode: Decode, stop: list[str]) -> None:
        self.stream, self.decode, self.stop = stream, decode, stop
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False

    def add(self, token_ids: list[int]) -> str:
        """The text that became final with these tokens; sets `stopped` at a stop string."""
        self.token_ids += token_ids
        pieces = [self.stream.step(token_id) for token_id in token_ids]
        self.text += "".join(piece for piece in pieces if piece)
        return self._emit_up_to(len(self.text) - self.holdback)

    def flush(self) -> str:
        """Everything not yet handed out, once the request is over."""
        full = self.decode(self.token_ids)
        if full.startswith(self.text):  # the characters still incomplete at the last step
            self.text = full
        return self._emit_up_to(len(self.text))

    def _emit_up_to(self, end: int) -> str:
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            end = cut
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : end], end
        return delta

    def _first_stop(self) -> int | None:
        if self.stopped:
            return None
        start = max(0, self.emitted - self.holdback)
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(found, default=None)
