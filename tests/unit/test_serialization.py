"""Output frames: a remote exception and its traceback reach the caller, whatever it can import."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest

from ember import wire
from ember.sdk.exceptions import RemoteError
from ember.sdk.serialization import error_frame, outcome_value


def _raise_and_frame(exc_class: type[Exception]) -> bytes:
    try:
        raise exc_class("the disk is full")
    except exc_class as exc:
        return error_frame(exc)


def test_an_exception_the_caller_can_import_is_raised_with_the_remote_traceback() -> None:
    frame = _raise_and_frame(ValueError)
    with pytest.raises(ValueError, match="the disk is full") as info:
        outcome_value(frame)
    assert "in _raise_and_frame" in "\n".join(info.value.__notes__)


def test_an_exception_whose_class_the_caller_lacks_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replica imports the user's module; the caller does not have it.
    (tmp_path / "replica_only.py").write_text("class QuotaError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import replica_only  # type: ignore[import-not-found]

    frame = _raise_and_frame(replica_only.QuotaError)
    monkeypatch.delitem(sys.modules, "replica_only")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(RemoteError) as info:
        outcome_value(frame)
    message = str(info.value)
    assert "QuotaError('the disk is full')" in message
    assert "Remote traceback:" in message and "in _raise_and_frame" in message


def test_frames_of_the_earlier_format_are_still_read() -> None:
    old = bytes([wire.Outcome.USER_ERROR]) + cloudpickle.dumps(
        (KeyError("k"), "Traceback (most recent call last): ...", "KeyError('k')")
    )
    with pytest.raises(KeyError) as info:
        outcome_value(old)
    assert info.value.__notes__ == ["Remote traceback:\nTraceback (most recent call last): ..."]
