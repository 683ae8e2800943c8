"""Text deltas from tokens: stop strings cut the answer, and nothing after them ever streams out."""

from __future__ import annotations

from ember.llm.detokenizer import Detokenizer, WindowDecoder

# A toy tokenizer: token i is the i-th piece.
PIECES = ["Hel", "lo", ",", " wor", "ld", ".", " Bye", "\ufffd"]


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def detokenizer(stop: list[str]) -> Detokenizer:
    return Detokenizer(WindowDecoder(decode), decode, stop)


def test_without_stop_strings_text_streams_as_it_comes() -> None:
    d = detokenizer([])
    assert [d.add([i]) for i in range(5)] == ["Hel", "lo", ",", " wor", "ld"]
    assert not d.stopped


def test_a_stop_string_split_across_tokens_is_never_shown() -> None:
    d = detokenizer(["world"])
    out = [d.add([i]) for i in range(5)]
    assert "".join(out) == "Hello, "
    assert d.stopped


def test_held_back_text_comes_out_when_no_stop_follows() -> None:
    d = detokenizer([", moon"])
    streamed = "".join(d.add([i]) for i in range(6))
    assert streamed + d.flush() == "Hello, world."
    assert not d.stopped


def test_an_incomplete_character_waits_for_the_next_token() -> None:
    d = detokenizer([])
    assert d.add([0, 7]) == "Hel"
    assert d.flush() == "\ufffd"


def test_a_stop_string_completed_by_the_flush_still_stops() -> None:
    d = detokenizer(["\ufffd"])
    assert d.add([0, 7]) == "Hel"
    assert d.flush() == ""
    assert d.stopped


def test_several_tokens_at_once_give_the_same_text_as_one_by_one() -> None:
    one_by_one = detokenizer([])
    text = "".join(one_by_one.add([i]) for i in range(7)) + one_by_one.flush()
    together = detokenizer([])
    assert together.add(list(range(7))) + together.flush() == text == "Hello, world. Bye"
