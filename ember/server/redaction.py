"""Redactor: hide an app's secret values in what its replicas print, however the text is cut.

- Each value is hidden, and so is each line of a multi-line value (a PEM key is printed, and
  logged, one line at a time).
- Values of LONG characters or more are hidden wherever they appear. Shorter ones are hidden where
  they stand as a whole word, so that a secret "1" does not blank every digit of the log; they
  are still hidden, since a short secret is a secret too.
- The log pump hands over one line (or one piece of an over-long line) at a time, so a long value
  can be cut between two of them: a piece that ends with the first FRAGMENT or more characters of
  one, or begins with its last FRAGMENT or more, has that part hidden too.

This hides what code prints by accident. Code that means to leak a secret can always encode it
first; keeping secrets from code that should not have them is the sandbox's job, not this one's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "****"
LONG = 8
FRAGMENT = 4


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._long: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        """Hide these values (and each line of them) from now on."""
        new = {piece for value in values for piece in _pieces(value)} - self._values
        if not new:
            return
        self._values |= new
        ordered = sorted(self._values, key=len, reverse=True)  # longest first: no partial hides
        self._long = [v for v in ordered if len(v) >= LONG]
        self._pattern = re.compile("|".join(_alternative(v) for v in ordered))

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        text = self._pattern.sub(MASK, text)
        for value in self._long:
            text = _hide_tail(_hide_head(text, value), value)
        return text


def _pieces(value: str) -> set[str]:
    lines = {line.strip() for line in value.splitlines()}
    return {piece for piece in {value, *lines} if piece.strip()}


def _alternative(value: str) -> str:
    if len(value) >= LONG:
        return re.escape(value)
    return rf"(?<!\w){re.escape(value)}(?!\w)"


def _hide_tail(text: str, value: str) -> str:
    """Hide the end of `text` if it is the first FRAGMENT+ characters of `value`."""
    start = text.find(value[:FRAGMENT], max(0, len(text) - len(value) + 1))
    while start != -1:
        if value.startswith(text[start:]) and _telling(text[start:]):
            return text[:start] + MASK
        start = text.find(value[:FRAGMENT], start + 1)
    return text


def _hide_head(text: str, value: str) -> str:
    """Hide the start of `text` if it is the last FRAGMENT+ characters of `value`."""
    head = text[:FRAGMENT]
    if len(head) < FRAGMENT:
        return text
    cut = value.find(head, 1)
    while cut != -1:
        if text.startswith(value[cut:]) and _telling(value[cut:]):
            return MASK + text[len(value) - cut :]
        cut = value.find(head, cut + 1)
    return text


def _telling(fragment: str) -> bool:
    """A fragment made only of punctuation (a PEM's '-----') says nothing about the secret."""
    return any(c.isalnum() for c in fragment)
