"""Recipe section `evaluate`: lm-eval tasks on the base and the adapted model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .._schema import Section, maybe_local_path

__all__ = ["EvaluateConfig"]


class EvaluateConfig(Section):
    """Stage `evaluate`."""

    tasks: list[str] = Field(..., min_length=1, description="Shipped benchmark names (pubmed_qa, ...) or any lm-eval task.")
    models: list[Literal["base", "adapted"]] = Field(["base", "adapted"], description="Which models to score.")
    base_model: str | None = Field(None, description="Default: train.model.")
    gguf_file: str | None = Field(None, description="Default: train.gguf_file.")
    adapter: str | None = Field(None, description="PEFT adapter folder; default: this run's train stage output.")
    prompt_format: dict[Literal["base", "adapted"], Literal["plain", "bonito", "chat"]] = Field(
        default_factory=lambda: {"base": "plain", "adapted": "bonito"},
        description="How each model sees a prompt: plain, bonito (<|input|>/<|output|> tags), or chat template.",
    )
    data_files: dict[str, str] = Field(
        default_factory=dict, description="Task name -> local table file (.jsonl, .json, .csv, .parquet; .gz too) in the public dataset's field names, replacing that dataset for all its templates."
    )
    backend: Literal["hf", "vllm"] = Field("hf", description="lm-eval model backend.")
    batch_size: int | Literal["auto"] = Field(
        "auto", description="lm-eval batch size; auto = lm-eval's detection on a GPU, 8 on a CPU."
    )
    limit: int | None = Field(None, ge=1, description="Examples per task (quick runs).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU.")
    trust_remote_code: bool = Field(False)
    seed: int = Field(1234, description="lm-eval's python/numpy/torch/few-shot seeds.")

    def resolve_paths(self, base: Path) -> None:
        self.base_model = maybe_local_path(base, self.base_model)
        self.adapter = maybe_local_path(base, self.adapter)
        self.data_files = {k: maybe_local_path(base, v) for k, v in self.data_files.items()}
