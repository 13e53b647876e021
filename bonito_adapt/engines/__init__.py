"""Generation engines behind one small interface, resolved by name.

Each engine is built from an `EngineSpec` (`spec.py`: the model and each engine's settings, no
stage's schema) and imports its heavy library (vllm, torch/transformers, httpx) only inside its
own module, so choosing `openai` never imports vllm and the core stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol, runtime_checkable

from .spec import EngineSpec, SamplingConfig

__all__ = ["Engine", "ENGINES", "EngineSpec", "SamplingConfig", "load_engine", "resolve_engine_name"]

# name -> "module:Class", imported only when chosen.
ENGINES = {
    "vllm": "bonito_adapt.engines.vllm_engine:VLLMEngine",
    "transformers": "bonito_adapt.engines.transformers_engine:TransformersEngine",
    "openai": "bonito_adapt.engines.openai_engine:OpenAIEngine",
}


@runtime_checkable
class Engine(Protocol):
    """What the generate stage needs from an engine."""

    name: str

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        """Return, for each prompt, `sampling.n` completions (text after the prompt only)."""

    def count_tokens(self, text: str) -> int:
        """Number of generator tokens in `text` (for passage splitting)."""

    @property
    def max_context(self) -> int | None:
        """The generator's context window in tokens, if known."""

    def close(self) -> None:
        """Free GPU memory / connections."""


def resolve_engine_name(name: str, spec: EngineSpec | None = None) -> str:
    """`auto` means vllm when it is installed and a GPU is present, else transformers; also transformers for a
    GGUF checkpoint (`spec.gguf_file`) that the installed vLLM cannot load."""
    if name != "auto":
        return name
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            if spec is not None and spec.gguf_file:
                from .vllm_engine import vllm_loads_gguf

                if not vllm_loads_gguf():
                    return "transformers"
            return "vllm"
    return "transformers"


def load_engine(name: str, spec: EngineSpec) -> Engine:
    """The engine `name` (vllm, transformers, openai or auto) loaded with `spec`."""
    module_name, class_name = ENGINES[resolve_engine_name(name, spec)].split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(spec)
