"""What a GPU replica sees: its devices, and that it holds one (bench/gpu_check.py deploys it)."""

import os
import subprocess

import ember

app = ember.App("gpu-check")


@app.function(gpu="any")
def one_gpu() -> dict[str, object]:
    import torch

    x = torch.ones(1 << 20, device="cuda")  # hold some memory while nvidia-smi looks
    seen = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": torch.cuda.device_count(),
        "name": torch.cuda.get_device_name(0),
        "sum": float(x.sum()),
        "nvidia_smi_compute_apps": seen.strip(),
    }


@app.function()
def no_gpu() -> dict[str, object]:
    import torch

    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_available": torch.cuda.is_available(),
    }
