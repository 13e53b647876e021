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
import os
from pathlib import Path
from typing import Any

from ..errors import UserError, missing_extra
from ..models import check_model_reference
from .spec import EngineSpec, SamplingConfig

__all__ = ["VLLMEngine", "llm_kwargs", "sampling_params_kwargs", "separator_is_special", "shutdown_llm",
           "vllm_loads_gguf"]


def _import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise missing_extra("vllm", "vllm") from None


def vllm_loads_gguf() -> bool:
    """Whether the installed vLLM can load a GGUF checkpoint. vLLM deprecated GGUF upstream (vllm-project/vllm
    #39583, an out-of-tree plugin instead) and 0.26.0 has no GGUF loader at all: it reads the .gguf file as a JSON
    config and fails (seen on the device, 2026-12-04). A plugin registers "gguf" as a quantization method."""
    try:
        from vllm.plugins import load_general_plugins

        load_general_plugins()  # an out-of-tree GGUF plugin registers itself here
    except ImportError:
        pass
    try:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    except ImportError:
        return True  # cannot tell: let vLLM try
    return "gguf" in QUANTIZATION_METHODS


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
    if spec.gguf_file and tokenizer and (Path(tokenizer).expanduser() / "config.json").is_file():
        # vLLM 0.26 read the model config from the .gguf path as if it were JSON (seen on the device): give it
        # the folder's config.json
        kwargs["hf_config_path"] = tokenizer
    return kwargs


def sampling_params_kwargs(sampling: SamplingConfig, keep_special_tokens: bool = False) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams(...)`."""
    kwargs = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
    }
    if keep_special_tokens:
        kwargs["skip_special_tokens"] = False
    return kwargs


def separator_is_special(tokenizer) -> bool:
    """Whether the tokenizer holds Bonito's `<|pipe|>` as a special added token. vLLM drops special tokens from
    the text it returns (`skip_special_tokens`): then they are kept, or no generation would parse."""
    from ..generate.task_format import PIPE  # here, not at import: generate imports the engines

    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return any(getattr(token, "content", None) == PIPE and getattr(token, "special", False)
               for token in added.values())


class VLLMEngine:
    name = "vllm"

    def __init__(self, spec: EngineSpec):
        # vLLM's engine process cannot fork once this process has touched CUDA (an earlier stage, a test); it
        # switches to spawn only when it notices, and did not always notice on the device.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._vllm = _import_vllm()
        self.spec = spec
        if spec.gguf_file and not vllm_loads_gguf():
            raise UserError(f"{spec.field('gguf_file')}: vLLM {getattr(self._vllm, '__version__', '')} cannot load GGUF "
                            "files (its GGUF support was removed); use engine: transformers, which loads them, or "
                            "give the model as a folder of safetensors weights")
        self.llm = self._vllm.LLM(**llm_kwargs(spec))
        self._tokenizer = self.llm.get_tokenizer()
        self.keep_special_tokens = separator_is_special(self._tokenizer)

    @property
    def max_context(self) -> int | None:
        value = self.llm.llm_engine.model_config.max_model_len
        return int(value) if value else None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    @property
    def prompts_per_call(self) -> int:
        """How many prompts the generate stage hands over at once (several shards): vLLM schedules them itself."""
        return self.spec.vllm.prompts_per_call

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        return self.generate_many([(prompts, sampling)])[0]

    def generate_many(self, requests: list[tuple[list[str], SamplingConfig]]) -> list[list[list[str]]]:
        """Several prompt lists, each with its own sampling (seed), in one `LLM.generate` call."""
        prompts: list[str] = []
        params: list[Any] = []
        per_request = [self._vllm.SamplingParams(**sampling_params_kwargs(sampling, self.keep_special_tokens))
                       for _, sampling in requests]
        for (batch, _), request_params in zip(requests, per_request, strict=True):
            prompts += batch
            params += [request_params] * len(batch)
        if not prompts:
            return [[] for _ in requests]
        # One SamplingParams for one request; else one per prompt (vLLM takes either).
        outputs = self.llm.generate(prompts, per_request[0] if len(requests) == 1 else params, use_tqdm=True)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        # RequestOutputs come back in prompt order; completions of one request are ordered by index.
        texts = [[completion.text for completion in sorted(output.outputs, key=lambda c: c.index)]
                 for output in outputs]
        results, start = [], 0
        for batch, _ in requests:
            results.append(texts[start:start + len(batch)])
            start += len(batch)
        return results

    def close(self) -> None:
        """Stop vLLM's engine process and free the GPU memory it held."""
        llm, self.llm = self.llm, None
        self._tokenizer = None
        shutdown_llm(llm)


def shutdown_llm(llm) -> None:
    """Stop a `vllm.LLM`'s engine process and free its GPU memory (so a train stage, or the next evaluated
    model, can have it); nothing for None."""
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
