"""On a GPU machine: `ember server` finds the GPUs, a `gpu="any"` replica gets exactly one and
holds it (nvidia-smi lists it), and a function that asked for none sees none.

    python3 bench/gpu_check.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import deployed


def main() -> None:
    with deployed("gpu_check_app.py") as (server, module):
        log = server.log_path.read_text()
        print("server says:", next(line for line in log.splitlines() if line.startswith("GPUs:")))
        results = {"one_gpu": module.one_gpu.remote(), "no_gpu": module.no_gpu.remote()}
    print(json.dumps(results, indent=1))
    one, none = results["one_gpu"], results["no_gpu"]
    assert one["device_count"] == 1 and one["nvidia_smi_compute_apps"], one
    assert none["cuda_available"] is False and none["CUDA_VISIBLE_DEVICES"] == "", none
    print("ok: one GPU placed, held while it ran, none for a function without gpu=")


if __name__ == "__main__":
    main()
