"""What an engine is given: the model to load and how to run it, free of any stage's settings.

`EngineSpec` names the model (hub id, local folder or GGUF file), its tokenizer and dtype, and the
settings of each engine (`transformers`, `vllm`, `openai`). The generate stage builds one from its
recipe section (`GenerateConfig.engine_spec()`); the drop-in `Bonito` class builds one from its
keyword arguments. `SamplingConfig` is what every engine's `generate` takes.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_serializer

from .._schema import Section

__all__ = ["EngineSpec", "SamplingConfig", "TransformersSettings", "VLLMConfig", "OpenAIConfig", "redact_url"]


def redact_url(url: str) -> str:
    """`url` without user:password and query values, safe to print or to write into a run directory."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


class SamplingConfig(Section):
    """Decoding parameters; defaults are the Bonito model card's."""

    n: int = Field(1, ge=1, description="Generations per passage.")
    temperature: float = Field(0.5, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per generation.")
    seed: int = Field(0, description="Sampling seed.")


class VLLMConfig(Section):
    """Settings passed to `vllm.LLM` (engine: vllm)."""

    execution_fields = frozenset({"tensor_parallel_size", "gpu_memory_utilization", "enforce_eager", "prompts_per_call"})

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=128, description="Context length; default: the model's.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. awq, gptq, bitsandbytes).")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (lower memory, slower).")
    prompts_per_call: int = Field(
        4096, ge=1, description="Prompts handed to vLLM at once, over as many shards as they fill, so its batch "
        "never drains at a shard boundary; a kill loses at most the shards of one call.")


class OpenAIConfig(Section):
    """An OpenAI-compatible `/v1/completions` server (engine: openai), e.g. `vllm serve`."""

    # Where and how requests are sent; `model_name` (which model answers) changes results.
    execution_fields = frozenset({"base_urls", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s"})

    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="One or more server base URLs (replicas); requests are spread over them.",
    )
    model_name: str | None = Field(None, description="The `model` field sent to the server; default: generate.model.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (never the key itself).",
    )
    concurrency: int = Field(32, ge=1, description="Requests in flight at once, over all servers.")
    timeout_s: float = Field(300.0, gt=0, description="Timeout of one request.")
    max_retries: int = Field(
        5, ge=0, description="Retries of a request after a connection error, timeout, HTTP 429 or 5xx."
    )
    backoff_s: float = Field(
        1.0, ge=0, description="Delay before the first retry; it doubles with each retry (with jitter, capped at 30 s)."
    )

    @field_serializer("base_urls", when_used="json")
    def _redacted_urls(self, urls: list[str]) -> list[str]:
        # What reaches recipe.yaml, manifests and hashes: credentials in a URL never leave the recipe.
        return [redact_url(url) for url in urls]


class TransformersSettings(Section):
    """Settings of the in-process transformers engine (engine: transformers)."""

    execution_fields = frozenset({"batch_size", "continuous_batching", "compile_decode"})

    batch_size: int = Field(
        16, ge=1,
        description="transformers engine: prompts per batch (padded batches only). On a GPU, larger is faster "
        "while the KV cache fits: 256 for an 8B generator on an 80 GB card (docs/performance.md).",
    )
    load_in_4bit: bool = Field(False, description="transformers engine: load the generator in 4-bit (needs CUDA).")
    continuous_batching: bool = Field(
        False,
        description="transformers engine: continuous batching (transformers' `generate_batch`, paged KV cache) "
        "instead of length-sorted padded batches. Off by default: on an H100 it measured no faster "
        "(docs/performance.md); for throughput use vllm or an OpenAI-compatible server.",
    )
    compile_decode: bool | Literal["auto"] = Field(
        "auto",
        description="transformers engine: a static KV cache and a torch.compile'd decode step (CUDA graphs), "
        "transformers' own fast path; prompts are prefilled in groups of similar length. The compile takes about "
        "a minute for an 8B model when the process starts (its artifacts are cached in ~/.cache/bonito_adapt/"
        "torchinductor for later runs); if it fails, generation goes on uncompiled. auto: on with a CUDA GPU "
        "unless load_in_4bit, for jobs of at least 200,000 generated tokens (smaller ones do not repay it).",
    )


class EngineSpec(Section):
    """The model an engine loads and the settings of each engine."""

    model: str = Field(..., description="Generator: Hugging Face id or local folder.")
    tokenizer: str | None = Field(None, description="Tokenizer id/folder if not the model's.")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` (or a path).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU.")
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    seed: int = Field(0, description="Engine-level seed (vLLM's); each generate call is seeded by its SamplingConfig.")
    transformers: TransformersSettings = Field(default_factory=TransformersSettings)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    origin: str = Field("generate", description="Where these settings come from, for messages (`generate`, `Bonito`).")

    def field(self, name: str) -> str:
        """The name a message gives a setting: `generate.model`, `generate.vllm.max_model_len`, ..."""
        return f"{self.origin}.{name}"

    @property
    def tokenizer_source(self) -> tuple[str, str, str | None]:
        """(name, field, gguf_file) of the tokenizer: the separate one if set, else the model's."""
        if self.tokenizer:
            return self.tokenizer, self.field("tokenizer"), None
        return self.model, self.field("model"), self.gguf_file
