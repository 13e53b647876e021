"""Recipe section `generate`: where the text comes from and how tasks are generated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .._schema import Section, local_path, maybe_local_path
from ..engines.spec import EngineSpec, OpenAIConfig, SamplingConfig, TransformersSettings, VLLMConfig
from ..errors import UserError
from .filters import JUDGE_PROMPT
from .task_format import full_task_type

__all__ = ["InputConfig", "ChunkingConfig", "SamplingConfig", "VLLMConfig", "OpenAIConfig", "GenerateConfig"]

BONITO_MODEL = "BatsResearch/Llama-3.1-8B-bonito-v1"


class InputConfig(Section):
    """The unannotated text. Either a Hugging Face dataset or local files."""

    dataset: str | None = Field(None, description="Hugging Face dataset id or a local dataset folder (save_to_disk).")
    dataset_config: str | None = Field(None, description="Dataset configuration name (e.g. unannotated_contract_nli).")
    split: str = Field("train", description="Dataset split to read.")
    files: list[str] = Field(
        default_factory=list,
        description="Local .jsonl/.json/.csv (also gzipped: .jsonl.gz ...)/.parquet tables, .txt/.md documents, "
        ".pdf/.docx/.html documents (extra `[docs]`), globs, or folders of documents (relative paths are relative to "
        "the recipe file).",
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


class JudgeConfig(Section):
    """The optional LLM-judge filter: the generator itself asked, per task, whether the answer is right."""

    prompt: str = Field(JUDGE_PROMPT, description="The question sent for each task, as is (no chat template), with "
                        "{passage}, {input} and {output} filled in.")
    accept: str = Field("yes", min_length=1, description="A task stays when the judge's answer starts with this.")
    max_tokens: int = Field(4, ge=1, description="Tokens of the judge's answer (greedy).")

    @field_validator("prompt")
    @classmethod
    def _has_the_task(cls, value: str) -> str:
        for name in ("{input}", "{output}"):
            if name not in value:
                raise ValueError(f"must contain {name} (and may contain {{passage}})")
        return value


class GenerateConfig(Section):
    """Stage `generate`: turn passages into instruction tasks."""

    # How generations are computed, not what they are: a change keeps the generations already made.
    execution_fields = frozenset({"engine", "batch_size", "continuous_batching", "compile_decode", "shard_size",
                                  "trust_remote_code"})

    input: InputConfig
    task_type: str = Field(..., description="Task type, short (nli) or full (natural language inference) name.")
    model: str = Field(BONITO_MODEL, description="Generator: Hugging Face id or local folder.")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` (or a path) to load with transformers "
                                  "(vLLM 0.26 has no GGUF loader: `engine: auto` then picks transformers).")
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
    # The transformers engine's settings sit at the top of the section (as in recipes so far);
    # `engine_spec()` hands them to the engine as its TransformersSettings.
    load_in_4bit: bool = TransformersSettings.model_fields["load_in_4bit"]
    batch_size: int = TransformersSettings.model_fields["batch_size"]
    continuous_batching: bool = TransformersSettings.model_fields["continuous_batching"]
    compile_decode: bool | Literal["auto"] = TransformersSettings.model_fields["compile_decode"]
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    shard_size: int = Field(256, ge=1, description="Passages per output shard (written as soon as it is done); a rerun "
                            "keeps every finished shard, also after this setting changes.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeConfig | None = Field(
        None, description="Ask the generator to judge each task and drop those it rejects (dropped rows go to "
        "generate/dropped.jsonl, verdicts to generate/judge.jsonl); `judge: {}` uses the default prompt.")
    near_duplicates: float | None = Field(
        None, gt=0.0, le=1.0, description="Drop tasks whose word 3-grams overlap an earlier task's by at least this "
        "Jaccard similarity (e.g. 0.8; MinHash LSH, confirmed exactly; needs `bonito_adapt[filters]`); dropped rows "
        "go to generate/dropped.jsonl. none: keep them.")
    balance_labels: float | None = Field(
        None, ge=1.0, description="For closed-answer task types (ynqa, nli, te, paraphrase_id, sentiment, topic_class, "
        "mcqa): keep at most this many times the rarest answer's count of each answer (1.0: even), dropping rows at "
        "random (sampling seed); dropped rows go to generate/dropped.jsonl. none: keep every task.")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)

    @field_validator("task_type")
    @classmethod
    def _known_task_type(cls, value: str) -> str:
        try:
            full_task_type(value)
        except UserError as error:  # -> a pydantic error naming the field
            raise ValueError(str(error)) from None
        return value

    def resolve_paths(self, base: Path) -> None:
        """Make relative local paths relative to the recipe's folder."""
        self.input.files = [local_path(base, f) for f in self.input.files]
        self.input.dataset = maybe_local_path(base, self.input.dataset)
        self.model = maybe_local_path(base, self.model)
        self.tokenizer = maybe_local_path(base, self.tokenizer)

    def engine_spec(self) -> EngineSpec:
        """What the engine needs of this section: the model, its loading and the engines' settings."""
        transformers = TransformersSettings(**{name: getattr(self, name) for name in TransformersSettings.model_fields})
        return EngineSpec(model=self.model, tokenizer=self.tokenizer, gguf_file=self.gguf_file, dtype=self.dtype,
                          trust_remote_code=self.trust_remote_code, seed=self.sampling.seed,
                          transformers=transformers, vllm=self.vllm, openai=self.openai, origin="generate")
