"""Recipe section `evaluate`: lm-eval tasks on the base and the adapted model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .._schema import Section, maybe_local_path

__all__ = ["EvaluateConfig"]


class EvaluateConfig(Section):
    """Stage `evaluate`."""

    # How the same scores are computed: a change keeps the (model, task) pairs already evaluated.
    execution_fields = frozenset({"backend", "batch_size", "shared_context", "trust_remote_code"})

    tasks: list[str] = Field(..., min_length=1, description="Shipped benchmark names (pubmed_qa, ...) or any lm-eval task.")
    models: list[Literal["base", "adapted"]] = Field(["base", "adapted"], description="Which models to score.")
    base_model: str | None = Field(None, description="Default: train.model.")
    gguf_file: str | None = Field(None, description="Default: train.gguf_file.")
    adapter: str | None = Field(None, description="PEFT adapter folder; default: this run's train stage output.")
    protocol: Literal["auto", "paper", "lm_eval"] = Field(
        "auto",
        description="How models are prompted and scored. paper: the Bonito paper's evaluation code (BOS + wrapper, "
        "choices ending in EOS tokenized apart from the prompt, source cut at 1,024 tokens; SQuADShifts greedy, 25 "
        "tokens, no stop, first gold answer); lm_eval: lm-eval's own (choice after a space, no EOS; SQuADShifts "
        "until a newline, 48 tokens); auto: paper for the paper's benchmarks, lm_eval for other tasks "
        "(docs/paper_protocol.md).",
    )
    prompt_format: dict[Literal["base", "adapted"],
                        Literal["auto", "plain", "bonito", "instruct", "mistral_instruct", "chat"]] = Field(
        default_factory=lambda: {"base": "auto", "adapted": "auto"},
        description="The wrapper around each model's prompt: plain, bonito (<|input|>/<|output|> tags, the training "
        "format), instruct ('Instruct: ...\\nAnswer:'), mistral_instruct ('[INST] ... [/INST]'), chat (the tokenizer's "
        "chat template); auto: the paper's choice under the paper protocol (instruct for a base model, bonito for an "
        "adapter, mistral_instruct for Mistral-7B-Instruct-v0.2), plain / bonito under lm_eval.",
    )
    squad_gold: Literal["auto", "first", "all"] = Field(
        "auto", description="SQuADShifts references: first (the paper's: answers.text[0] only), all (SQuAD's rule: the "
        "best over every gold answer); auto: first under the paper protocol, all under lm_eval.",
    )
    shared_context: bool = Field(
        True, description="hf backend: run every token the ranked requests share once (an example's context for all "
        "its answer choices, and the text examples share at their start, e.g. one document asked several questions), "
        "in packed rows; same log-likelihoods as one forward per choice. false: lm-eval's own per-choice forwards.",
    )
    data_files: dict[str, str] = Field(
        default_factory=dict, description="Task name -> local table file (.jsonl, .json, .csv, .parquet; .gz too) in the public dataset's field names, replacing that dataset for all its templates."
    )
    backend: Literal["hf", "vllm"] = Field("hf", description="lm-eval model backend.")
    batch_size: int | Literal["auto"] = Field(
        "auto", description="An integer N: lm-eval's batch size; with shared_context, ranked forwards no larger than N "
        "of the longest requests. auto on a GPU: 16,384 tokens a ranked forward in rows of up to 2,048 with "
        "shared_context, lm-eval's detection otherwise; auto on a CPU: 8."
    )
    limit: int | None = Field(None, ge=1, description="Examples per task (quick runs).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU.")
    trust_remote_code: bool = Field(False)
    seed: int = Field(1234, description="lm-eval's python/numpy/torch/few-shot seeds.")

    def resolve_paths(self, base: Path) -> None:
        self.base_model = maybe_local_path(base, self.base_model)
        self.adapter = maybe_local_path(base, self.adapter)
        self.data_files = {k: maybe_local_path(base, v) for k, v in self.data_files.items()}
