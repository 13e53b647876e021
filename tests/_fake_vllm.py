"""A test double of the `vllm` module, for testing the vllm engine on machines without vLLM.

Its signatures copy vLLM 0.33.0's (vllm/entrypoints/llm.py `LLM.__init__` and `LLM.generate`,
vllm/sampling_params.py `SamplingParams`, vllm/outputs.py `RequestOutput`/`CompletionOutput`,
vllm/engine/arg_utils.py `EngineArgs`), keyword-only where vLLM's are and without catch-alls, so
an argument name vLLM does not have fails here with TypeError as it would there. Only the part of
vLLM's surface the engine may touch is copied. What the engine passes is recorded on the module
(`created`, `sampling_params`, `generate_calls`, `shutdowns`, `destroyed`).

`LLM.generate` stands in for the GPU: completion i of a prompt is `"<prompt>|<i>|seed=<seed>"`,
so tests can see which prompt, sample and seed each completion came from, and its outputs are
built in a shuffled order of indices to check the engine sorts them.
"""

from __future__ import annotations

import random
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

VLLM_VERSION_CHECKED = "0.33.0"

# EngineArgs fields (vllm/engine/arg_utils.py, 0.33.0) that LLM(**kwargs) forwards; the engine
# may pass these beyond LLM's named parameters.
ENGINE_ARGS_FIELDS = {"max_model_len", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
                      "swap_space", "kv_cache_dtype", "download_dir", "load_format", "pipeline_parallel_size",
                      "hf_config_path"}

__version__ = VLLM_VERSION_CHECKED
created: list[dict[str, Any]] = []
sampling_params: list[SamplingParams] = []
generate_calls: list[dict[str, Any]] = []
shutdowns: list[str] = []
destroyed: list[str] = []


@dataclass(kw_only=True)
class SamplingParams:
    # Field names, order and defaults of vllm 0.33.0 (the first 16 fields; the engine uses 5).
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    watermarking: bool | None = None
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    skip_special_tokens: bool = True  # further down in vLLM's field list

    def __post_init__(self):
        sampling_params.append(self)


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any | None
    outputs: list[CompletionOutput]
    finished: bool
    extra: dict = field(default_factory=dict)


class _Tokenizer:
    """Whitespace tokens: enough for the engine's count_tokens."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [hash(word) % 1000 for word in text.split()]
        return [1, *ids] if add_special_tokens else ids


@dataclass
class _ModelConfig:
    model: str
    max_model_len: int


class _EngineCoreClient:
    def shutdown(self, timeout: float | None = None) -> None:
        shutdowns.append("engine_core")


class _LLMEngine:
    def __init__(self, model: str, max_model_len: int):
        self.model_config = _ModelConfig(model=model, max_model_len=max_model_len)
        self.engine_core = _EngineCoreClient()

    def get_tokenizer(self) -> _Tokenizer:
        return _Tokenizer()


class LLM:
    # vllm 0.33.0 LLM.__init__, parameters up to `seed` plus the ones the engine uses.
    def __init__(self, model: str, *, runner: str = "auto", convert: str = "auto", tokenizer: str | None = None,
                 tokenizer_mode: str = "auto", skip_tokenizer_init: bool = False, trust_remote_code: bool = False,
                 allowed_local_media_path: str = "", allowed_media_domains: list[str] | None = None,
                 tensor_parallel_size: int = 1, dtype: str = "auto", quantization: str | None = None,
                 revision: str | None = None, tokenizer_revision: str | None = None, chat_template: str | None = None,
                 seed: int = 0, gpu_memory_utilization: float = 0.92, cpu_offload_gb: float = 0,
                 enforce_eager: bool = False, hf_token: bool | str | None = None, **kwargs: Any) -> None:
        unknown = set(kwargs) - ENGINE_ARGS_FIELDS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")
        created.append(dict(model=model, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
                            tensor_parallel_size=tensor_parallel_size, dtype=dtype, quantization=quantization,
                            seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                            enforce_eager=enforce_eager, **kwargs))
        self.llm_engine = _LLMEngine(model, kwargs.get("max_model_len") or 4096)
        self.model_config = self.llm_engine.model_config

    def get_tokenizer(self) -> _Tokenizer:
        return self.llm_engine.get_tokenizer()

    def generate(self, prompts, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 use_tqdm: bool | Callable[..., Any] = True, lora_request: Any = None, priority: Any = None,
                 tokenization_kwargs: dict[str, Any] | None = None,
                 mm_processor_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        generate_calls.append({"prompts": prompt_list, "sampling_params": sampling_params, "use_tqdm": use_tqdm})
        if isinstance(sampling_params, Sequence):  # one per prompt, as vLLM requires
            if len(sampling_params) != len(prompt_list):
                raise ValueError("The lengths of prompts and sampling_params must be the same.")
            per_prompt = list(sampling_params)
        else:
            per_prompt = [sampling_params or SamplingParams()] * len(prompt_list)
        outputs = []
        for number, (prompt, params) in enumerate(zip(prompt_list, per_prompt, strict=True)):
            indices = list(range(params.n))
            random.Random(number).shuffle(indices)
            completions = [CompletionOutput(index=i, text=f"{prompt}|{i}|seed={params.seed}",
                                            token_ids=[0] * (params.max_tokens or 0),  # as if EOS were ignored
                                            cumulative_logprob=None, logprobs=None, finish_reason="length")
                           for i in indices]
            outputs.append(RequestOutput(request_id=str(number), prompt=prompt, prompt_token_ids=None,
                                         prompt_logprobs=None, outputs=completions, finished=True))
        return outputs


def _destroy_model_parallel() -> None:
    destroyed.append("model_parallel")


def _destroy_distributed_environment() -> None:
    destroyed.append("distributed_environment")


def install(monkeypatch) -> types.ModuleType:
    """Put this module in sys.modules as `vllm` (with `vllm.distributed.parallel_state`), freshly reset."""
    module = sys.modules[__name__]
    for log in (created, sampling_params, generate_calls, shutdowns, destroyed):
        log.clear()
    distributed = types.ModuleType("vllm.distributed")
    parallel_state = types.ModuleType("vllm.distributed.parallel_state")
    parallel_state.destroy_model_parallel = _destroy_model_parallel
    parallel_state.destroy_distributed_environment = _destroy_distributed_environment
    distributed.parallel_state = parallel_state
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", parallel_state)
    return module


def offer_quantization_methods(monkeypatch, methods: list[str]) -> None:
    """`vllm.model_executor.layers.quantization.QUANTIZATION_METHODS` as `methods` (vLLM 0.26.0's list has no
    "gguf": its GGUF loader was removed)."""
    names = ("vllm.model_executor", "vllm.model_executor.layers", "vllm.model_executor.layers.quantization")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].QUANTIZATION_METHODS = list(methods)
