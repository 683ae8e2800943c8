"""The rule every named resource follows (volumes, secrets, tokens, keys), shared by SDK and server.

A name is what users type on the command line and what the server puts in paths and tables, so it
is kept to letters, digits, '-', '_' and '.', starts with a letter or digit, and is at most
MAX_NAME characters: no '/', no '..', no NUL or newline, nothing a terminal would interpret.
Paths that users choose (inside an image, a volume, an app's sources) are held to what a
filesystem can hold, so a long one is refused with a 400 rather than failing in the kernel.
"""

from __future__ import annotations

import re

MAX_NAME = 64
MAX_PATH = 1024  # bytes of a relative path a user chooses
MAX_PART = 255  # bytes of one file or folder name (the filesystem's own limit)
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
NAME_RULE = (
    f"use letters, digits, '-', '_' and '.', at most {MAX_NAME} characters, "
    "starting with a letter or digit"
)


class InvalidName(ValueError):
    """A name that breaks the rule; the message names the kind of thing and the rule."""


def shown(value: str, limit: int = 40) -> str:
    """`value` as an error message may show it: quoted, escaped, and cut if long."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_name(kind: str, name: object) -> str:
    """`name` if it follows the rule; otherwise InvalidName saying which `kind` and why."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown_name = shown(name) if isinstance(name, str) else repr(name)
        raise InvalidName(f"invalid {kind} name {shown_name}: {NAME_RULE}")
    return name


def fits_filesystem(relative: str) -> bool:
    """Whether a '/'-separated relative path is short enough for any filesystem to hold."""
    return len(relative.encode()) <= MAX_PATH and all(
        len(part.encode()) <= MAX_PART for part in relative.split("/")
    )
