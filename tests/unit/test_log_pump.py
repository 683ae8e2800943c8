"""The log pump: whatever a replica prints, readable lines come out and the pipe keeps draining."""

from __future__ import annotations

import asyncio

from ember.backends.log_pump import MAX_LINE, pump_logs


async def pumped(*writes: bytes) -> list[str]:
    """The log lines of this output, written in these pieces (chunk boundaries included)."""
    stream, lines = asyncio.StreamReader(), []
    for data in writes:
        stream.feed_data(data)
    stream.feed_eof()
    await pump_logs(stream, lines.append)
    return lines


async def test_lines_come_out_as_printed() -> None:
    assert await pumped(b"one\ntw", b"o\r\n\nthree") == ["one", "two", "", "three"]


async def test_a_progress_bar_is_its_last_state() -> None:
    bar = b"".join(b"\rdownloading %8d/5000 %s" % (i, b"#" * 40) for i in range(5000))
    pieces = [bar[i : i + 1000] for i in range(0, len(bar), 1000)]  # cut anywhere, even at \r
    lines = await pumped(b"start\n", *pieces, b"\r\ndone\n")
    assert lines == ["start", "downloading     4999/5000 " + "#" * 40, "done"]


async def test_a_huge_line_is_cut_with_a_marker() -> None:
    huge = b"x" * (10 * 1024 * 1024)
    lines = await pumped(huge, b"\nafter\n")
    assert lines[0] == "x" * MAX_LINE
    assert lines[1] == f"[ember] the line above was cut at {MAX_LINE:,} bytes; " + (
        f"{len(huge) - MAX_LINE:,} more"
    )
    assert lines[2:] == ["after"]


async def test_bytes_that_are_not_utf8_are_replaced() -> None:
    assert await pumped(b"caf\xc3\xa9 \xff\xfe\x00garbage\n") == ["café \ufffd\ufffd\x00garbage"]
