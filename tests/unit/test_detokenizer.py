"""Text deltas from tokens: stop strings cut the answer, and nothing after them ever streams out."""

from __future__ import annotations

from ember.llm.detokenizer import Detokenizer

# A toy tokenizer: token i is the i-th piece.
PIECES = ["Hel", "lo", ",", " wor", "ld", ".", " Bye", "\ufffd"]


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def test_without_stop_strings_text_streams_as_it_comes() -> None:
    d = Detokenizer(decode, [])
    assert [d.add([i]) for i in range(5)] == ["Hel", "lo", ",", " wor", "ld"]
    assert not d.stopped


def test_a_stop_string_split_across_tokens_is_never_shown() -> None:
    d = Detokenizer(decode, ["world"])
    out = [d.add([i]) for i in range(5)]
    assert "".join(out) == "Hello, "
    assert d.stopped


def test_held_back_text_comes_out_when_no_stop_follows() -> None:
    d = Detokenizer(decode, [", moon"])
    streamed = "".join(d.add([i]) for i in range(6))
    assert streamed + d.flush() == "Hello, world."
    assert not d.stopped


def test_an_incomplete_character_waits_for_the_next_token() -> None:
    d = Detokenizer(decode, [])
    assert d.add([0, 7]) == "Hel"
    assert d.flush() == "\ufffd"
