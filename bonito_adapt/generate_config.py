"""Recipe section `generate`: where the text comes from and how tasks are generated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_serializer, field_validator, model_validator

from ._schema import Section, local_path, maybe_local_path
from .prompts import full_task_type

__all__ = ["InputConfig", "ChunkingConfig", "SamplingConfig", "VLLMConfig", "OpenAIConfig", "GenerateConfig",
           "redact_url"]

BONITO_MODEL = "BatsResearch/Llama-3.1-8B-bonito-v1"


def redact_url(url: str) -> str:
    """`url` without user:password and query values, safe to print or to write into a run directory."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


class InputConfig(Section):
    """The unannotated text. Either a Hugging Face dataset or local files."""

    dataset: str | None = Field(None, description="Hugging Face dataset id or a local dataset folder (save_to_disk).")
    dataset_config: str | None = Field(None, description="Dataset configuration name (e.g. unannotated_contract_nli).")
    split: str = Field("train", description="Dataset split to read.")
    files: list[str] = Field(
        default_factory=list,
        description="Local .jsonl/.json/.csv (also gzipped: .jsonl.gz ...)/.parquet/.txt/.md files, globs, or folders of .txt/.md documents "
        "(relative paths are relative to the recipe file).",
    )
    context_col: str = Field("text", description="Column that holds the text (ignored for .txt/.md documents).")
    id_col: str | None = Field(None, description="Column used as source_id; default: the row index.")
    max_documents: int | None = Field(None, ge=1, description="Read at most this many documents (quick runs).")

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if bool(self.dataset) == bool(self.files):
            raise ValueError("set exactly one of `dataset` (a Hugging Face dataset) or `files` (local files)")
        return self


class ChunkingConfig(Section):
    """How long documents are split into passages that fit the generator's context window."""

    max_tokens: int | None = Field(
        None, ge=16,
        description="Passage length limit in generator tokens; default: what fits the generator's context "
        "after the prompt and max_tokens of output (capped at 1024).",
    )
    overlap_tokens: int = Field(0, ge=0, description="Tokens shared by consecutive passages of one document.")
    min_chars: int = Field(1, ge=1, description="Passages shorter than this (after stripping) are dropped.")
    dedupe: bool = Field(True, description="Drop exact duplicate passages.")


class SamplingConfig(Section):
    """Decoding parameters; defaults are the Bonito model card's."""

    n: int = Field(1, ge=1, description="Generations per passage.")
    temperature: float = Field(0.5, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per generation.")
    seed: int = Field(0, description="Sampling seed.")


class VLLMConfig(Section):
    """Settings passed to `vllm.LLM` (engine: vllm)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=128, description="Context length; default: the model's.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. awq, gptq, bitsandbytes).")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (lower memory, slower).")


class OpenAIConfig(Section):
    """An OpenAI-compatible `/v1/completions` server (engine: openai), e.g. `vllm serve`."""

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


class GenerateConfig(Section):
    """Stage `generate`: turn passages into instruction tasks."""

    input: InputConfig
    task_type: str = Field(..., description="Task type, short (nli) or full (natural language inference) name.")
    model: str = Field(BONITO_MODEL, description="Generator: Hugging Face id or local folder.")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` (or a path) to load with transformers.")
    tokenizer: str | None = Field(None, description="Tokenizer id/folder if not the model's.")
    style: Literal["bonito", "prompted"] = Field(
        "bonito",
        description="bonito: a Bonito model conditioned on task type; prompted: any chat model asked through "
        "its chat template (the paper's instruction-model baseline).",
    )
    engine: Literal["auto", "vllm", "transformers", "openai"] = Field(
        "auto", description="auto: vllm when installed with a GPU, else transformers."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype; auto: bf16 on GPU, fp32 on CPU."
    )
    load_in_4bit: bool = Field(False, description="transformers engine: load the generator in 4-bit (needs CUDA).")
    batch_size: int = Field(
        16, ge=1,
        description="transformers engine: prompts per batch (padded batches only). On a GPU, larger is faster "
        "while the KV cache fits: 256 for an 8B generator on an 80 GB card (docs/performance.md).",
    )
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
        "a minute for an 8B model when the process starts; if it fails, generation goes on uncompiled. "
        "auto: on with a CUDA GPU unless load_in_4bit.",
    )
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    shard_size: int = Field(256, ge=1, description="Passages per output shard; a rerun resumes after the last full shard.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)

    @field_validator("task_type")
    @classmethod
    def _known_task_type(cls, value: str) -> str:
        try:
            full_task_type(value)
        except Exception as error:  # UserError -> pydantic error naming the field
            raise ValueError(str(error)) from None
        return value

    def resolve_paths(self, base: Path) -> None:
        """Make relative local paths relative to the recipe's folder."""
        self.input.files = [local_path(base, f) for f in self.input.files]
        self.input.dataset = maybe_local_path(base, self.input.dataset)
        self.model = maybe_local_path(base, self.model)
        self.tokenizer = maybe_local_path(base, self.tokenizer)
