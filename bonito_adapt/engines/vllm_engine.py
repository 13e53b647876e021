"""In-process generation with `vllm.LLM` (the fastest engine on a GPU machine).

All prompts of a `generate` call go to one `LLM.generate` call: vLLM schedules and batches them
itself (continuous batching, paged KV cache). `n` completions per prompt come from
`SamplingParams.n`; the per-request `seed` makes each prompt's samples reproducible.

API names checked against vLLM 0.33.0 (vllm/entrypoints/llm.py, vllm/sampling_params.py,
vllm/outputs.py); they are the same back to 0.8: `LLM(model, *, tokenizer, trust_remote_code,
tensor_parallel_size, dtype, quantization, seed, gpu_memory_utilization, enforce_eager,
**engine_args)` with `max_model_len` an `EngineArgs` field; `SamplingParams(n, temperature,
top_p, max_tokens, seed)`; `LLM.generate(prompts, sampling_params, use_tqdm=...)` returning one
`RequestOutput` per prompt, in prompt order, whose `.outputs[i].text` is the i-th completion;
`LLM.get_tokenizer()`; `LLM.llm_engine.model_config.max_model_len` (0.33 also has
`LLM.model_config`, older versions only the engine's).
"""

from __future__ import annotations

import gc
import importlib
from pathlib import Path
from typing import Any

from ..errors import UserError, missing_extra
from ..models import check_model_reference
from .spec import EngineSpec, SamplingConfig

__all__ = ["VLLMEngine", "llm_kwargs", "sampling_params_kwargs"]


def _import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise missing_extra("vllm", "vllm") from None


def _model_and_tokenizer(spec: EngineSpec) -> tuple[str, str | None]:
    """vLLM reads a GGUF checkpoint from the file itself, with the tokenizer given separately."""
    check_model_reference(spec.model, spec.field("model"), spec.gguf_file)
    if not spec.gguf_file:
        return spec.model, spec.tokenizer
    gguf = Path(spec.gguf_file)
    if not gguf.is_absolute():
        if not Path(spec.model).expanduser().is_dir():
            raise UserError(f"{spec.field('gguf_file')}: engine vllm needs the GGUF file on this machine; download it "
                            "and give its path (or a local model folder holding it)")
        gguf = Path(spec.model).expanduser() / gguf
    # vLLM's own GGUF tokenizer conversion is slow and lossy; the model folder's tokenizer is preferred.
    tokenizer = spec.tokenizer or (spec.model if Path(spec.model).expanduser().is_dir() else None)
    return str(gguf), tokenizer


def llm_kwargs(spec: EngineSpec) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM(...)` for this engine spec."""
    model, tokenizer = _model_and_tokenizer(spec)
    settings = spec.vllm
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "trust_remote_code": spec.trust_remote_code,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "dtype": spec.dtype,  # vLLM takes the same names: auto, bfloat16, float16, float32
        "quantization": settings.quantization,
        "enforce_eager": settings.enforce_eager,
        "seed": spec.seed,
    }
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    return kwargs


def sampling_params_kwargs(sampling: SamplingConfig) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams(...)`."""
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
    }


class VLLMEngine:
    name = "vllm"

    def __init__(self, spec: EngineSpec):
        self._vllm = _import_vllm()
        self.spec = spec
        self.llm = self._vllm.LLM(**llm_kwargs(spec))
        self._tokenizer = self.llm.get_tokenizer()

    @property
    def max_context(self) -> int | None:
        value = self.llm.llm_engine.model_config.max_model_len
        return int(value) if value else None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        if not prompts:
            return []
        params = self._vllm.SamplingParams(**sampling_params_kwargs(sampling))
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        # RequestOutputs come back in prompt order; completions of one request are ordered by index.
        return [[completion.text for completion in sorted(output.outputs, key=lambda c: c.index)]
                for output in outputs]

    def close(self) -> None:
        """Stop vLLM's engine process and free the GPU memory it held."""
        llm, self.llm = self.llm, None
        self._tokenizer = None
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)  # V1 engine: a separate process
        if engine_core is not None:
            engine_core.shutdown()
        del llm
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
