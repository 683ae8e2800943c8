"""Wire messages stay compatible: every field beyond the required core has a default."""

from __future__ import annotations

import pydantic
import pytest

from ember import wire

# Fields an old client must always send; everything else needs a default.
REQUIRED = {
    "FunctionSpec": {"name"},
    "DeployRequest": {"app_name", "declared_name", "module", "functions"},
    "ReplicaSpec": {
        "app_name",
        "version",
        "declared_name",
        "module",
        "source_dir",
        "function",
        "server_url",
    },
    "ReplicaAssignment": {"replica_id", "token"},
    "ReplicaStatus": {"state"},
    "VolumeCreate": {"name"},
    "UploadStart": set(),
    "UploadCommit": set(),
}


@pytest.mark.parametrize("model_name", sorted(REQUIRED))
def test_new_fields_have_defaults(model_name: str) -> None:
    model: type[pydantic.BaseModel] = getattr(wire, model_name)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required == REQUIRED[model_name]


def test_frames_round_trip_and_reject_truncation() -> None:
    frames = [b"", b"a", b"x" * 70_000]
    packed = wire.pack_frames(frames)
    assert wire.unpack_frames(packed) == frames
    with pytest.raises(ValueError, match="truncated"):
        wire.unpack_frames(packed[:-1])


# A deploy as an SDK of API_VERSION 1 sends it, at its smallest.
FIRST_VERSION_DEPLOY = {
    "app_name": "hello",
    "declared_name": "app",
    "module": "hello",
    "functions": [{"name": "square"}],
}


def test_a_message_of_the_first_api_version_still_validates() -> None:
    request = wire.DeployRequest.model_validate(FIRST_VERSION_DEPLOY)
    assert request.functions[0] == wire.FunctionSpec(name="square")
    assert request.files == {} and request.inline_secrets == {}


def test_fields_from_a_newer_peer_are_ignored_not_refused() -> None:
    newer = {
        **FIRST_VERSION_DEPLOY,
        "added_later": True,
        "functions": [{"name": "square", "gpu_fallback": ["H100"]}],
    }
    request = wire.DeployRequest.model_validate(newer)
    assert request.functions[0].name == "square"
