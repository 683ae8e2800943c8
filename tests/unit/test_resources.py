"""`gpu=` in Modal's forms, parsed once; GPU names as drivers spell them."""

from __future__ import annotations

import pytest

from ember.resources import GpuOption, ResourceError, gpu_type_of, parse_gpu


def test_modal_forms() -> None:
    assert parse_gpu(None) is None
    h100 = parse_gpu("h100")
    assert h100 is not None and h100.options == (GpuOption(("H100", "H200"), 1),)
    exact = parse_gpu("H100!:2")
    assert exact is not None and exact.options == (GpuOption(("H100",), 2),)
    a100 = parse_gpu("A100-80GB:2")
    assert a100 is not None and a100.options == (GpuOption(("A100-80GB",), 2),)
    anything = parse_gpu("any")
    assert anything is not None and anything.options == (GpuOption((), 1),)
    fallback = parse_gpu(["H100", "a10g"])
    assert fallback is not None and [o.types[0] for o in fallback.options] == ["H100", "A10G"]
    a100 = parse_gpu("A100")  # Modal's A100 is the 40 GB one, and may get an 80 GB one
    assert a100 is not None and a100.options[0].types == ("A100-40GB", "A100-80GB")


@pytest.mark.parametrize("bad", ["H101", "H100:0", "H100:9", "H100:x", "", [], [3], "H100 :2"])
def test_bad_requests_say_what_is_valid(bad: object) -> None:
    with pytest.raises(ResourceError, match="gpu"):
        parse_gpu(bad)  # type: ignore[arg-type]


def test_device_names() -> None:
    assert gpu_type_of("NVIDIA H100 80GB HBM3") == "H100"
    assert gpu_type_of("NVIDIA H200") == "H200"
    assert gpu_type_of("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert gpu_type_of("NVIDIA A100-PCIE-40GB") == "A100-40GB"
    assert gpu_type_of("NVIDIA A10G") == "A10G"
    assert gpu_type_of("NVIDIA A10") == "A10G"
    assert gpu_type_of("Tesla T4") == "T4"
    assert gpu_type_of("NVIDIA L40S") == "L40S"
    assert gpu_type_of("NVIDIA L4") == "L4"
    assert gpu_type_of("NVIDIA GeForce RTX 4090") == "NVIDIA GeForce RTX 4090"
