"""The files in examples/ stay valid as the code moves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ember.llm.config import LLMConfig

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_the_example_config_is_accepted() -> None:
    config = LLMConfig.load(EXAMPLES / "config.yaml")
    assert config.served_model_name == "smollm2"
    assert config.service.min_containers == 0


def test_the_vllm_example_is_a_class_with_a_web_server() -> None:
    spec = importlib.util.spec_from_file_location("vllm_app", EXAMPLES / "vllm_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = module.app.specs["Vllm"]
    assert function.is_class and function.gpu == "H100"
    assert function.web is not None and function.web.kind == "web_server"
    assert function.web.port == module.VLLM_PORT and function.web.requires_proxy_auth
