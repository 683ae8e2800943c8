"""Secret values are hidden from logs however user code prints them by accident."""

from __future__ import annotations

from ember.server.redaction import Redactor

PASSWORD = "Sup3rS3cretPassw0rd-XYZZY"
PEM = "-----BEGIN KEY-----\nAAAAlinetwoSECRETPEMbody42\nBBBBlinethreeMOREbody77\n-----END KEY-----"


def redactor(*values: str) -> Redactor:
    r = Redactor()
    r.add(values)
    return r


def test_each_line_of_a_multi_line_value_is_hidden() -> None:
    r = redactor(PEM)
    printed = f"pem is {PEM}".splitlines()  # the log pump hands over one line at a time
    shown = [r.redact(line) for line in printed]
    assert shown == ["pem is ****", "****", "****", "****"]


def test_a_value_cut_between_lines_or_pieces_is_hidden_on_both_sides() -> None:
    r = redactor(PASSWORD)
    assert r.redact(f"password={PASSWORD[:9]}") == "password=****"
    assert r.redact(f"{PASSWORD[9:]} (end)") == "**** (end)"
    assert r.redact(f"twice {PASSWORD} and {PASSWORD}!") == "twice **** and ****!"


def test_short_values_are_hidden_as_whole_words_only() -> None:
    r = redactor("alice", "7")
    assert r.redact("user alice logged in; malice is a word") == (
        "user **** logged in; malice is a word"
    )
    assert r.redact("retry 7 of 17") == "retry **** of 17"


def test_text_without_secrets_is_untouched() -> None:
    r = redactor(PASSWORD, PEM)
    for line in ("----------", "Sup", "3 errors", "-----BEGIN CERTIFICATE-----x"):
        assert r.redact(line) == line
    assert Redactor().redact(PASSWORD) == PASSWORD  # an app without secrets


def test_values_added_later_are_hidden_too() -> None:
    r = redactor("first-secret-value")
    r.add(["second-secret-value", ""])
    assert r.redact("first-secret-value second-secret-value") == "**** ****"
