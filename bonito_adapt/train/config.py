"""Recipe section `train`: Q-LoRA adaptation of a target model on the generated tasks.

Defaults are the Bonito model card's / paper's training recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .._schema import Section, local_path, maybe_local_path

__all__ = ["TrainDatasetConfig", "LoraSettings", "TrainConfig"]


class TrainDatasetConfig(Section):
    """One training source. `generate` means this run's generate stage output."""

    path: str = Field("generate", description="`generate`, a Hugging Face dataset id, a save_to_disk folder, or .jsonl/.json/.parquet/.csv files.")
    dataset_config: str | None = Field(None, description="Hugging Face dataset configuration name.")
    split: str = Field("train", description="Split to read.")
    input_col: str = Field("input", description="Column with the task input.")
    output_col: str = Field("output", description="Column with the task output.")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight when several datasets are mixed.")


class LoraSettings(Section):
    r: int = Field(64, ge=1, description="LoRA rank.")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (the Bonito card's value is 4).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules to adapt; all-linear = every linear layer except lm_head."
    )


class TrainConfig(Section):
    """Stage `train`."""

    # How the same optimisation is computed (same effective batch, same examples per step): a change resumes
    # from the checkpoints on disk. Not padding_free: padded batches are grouped by length, another data order.
    execution_fields = frozenset({"micro_batch_size", "gradient_checkpointing", "max_memory_gib", "attn_implementation",
                                  "use_liger_kernel", "save_steps", "save_total_limit", "logging_steps",
                                  "report_to", "trust_remote_code"})

    model: str = Field("mistralai/Mistral-7B-v0.1", description="Target model: Hugging Face id or local folder.")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` to load (dequantized) with transformers.")
    tokenizer: str | None = Field(None, description="Tokenizer id/folder if not the model's.")
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    datasets: list[TrainDatasetConfig] = Field(
        default_factory=lambda: [TrainDatasetConfig()], description="Training sources, mixed by weight."
    )
    format: Literal["bonito", "chat"] = Field(
        "bonito", description="bonito: `<|input|>\\n{input}\\n<|output|>\\n{output}` + EOS; chat: the model's chat template."
    )
    quantization: Literal["4bit", "none", "auto"] = Field(
        "4bit", description="4bit: Q-LoRA (needs CUDA); none: plain LoRA; auto: 4bit with CUDA, else plain LoRA in fp32."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name; linear decays to 0.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.3, gt=0, description="Gradient clipping norm.")
    optimizer: str = Field(
        "paged_adamw_32bit",
        description="transformers optimizer name; without CUDA a paged_* optimizer becomes adamw_torch (printed).",
    )
    effective_batch_size: int = Field(16, ge=1, description="Examples per optimizer step, whatever the GPU count.")
    micro_batch_size: int | Literal["auto"] = Field(
        "auto", description="Examples per forward pass per device; accumulation = effective / (micro x processes). "
        "auto: the whole step in one forward per process (effective / processes), which is fastest with "
        "padding-free batches (docs/performance.md); set a smaller number if memory runs out.",
    )

    @field_validator("micro_batch_size")
    @classmethod
    def _positive_micro_batch(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError("must be at least 1 (or auto)")
        return value
    max_length: int = Field(2048, ge=16, description="Longer examples are truncated (their end is cut).")
    max_prompt_length: int | None = Field(
        None, ge=1, description="Prompt tokens kept, from the start (the paper's source_max_len is 1024); none: no "
        "cap but max_length. Not with packing.")
    max_completion_length: int | None = Field(
        None, ge=1, description="Completion tokens kept, EOS included, from the start (the paper's target_max_len "
        "is 1024); none: no cap but max_length. Not with packing.")
    max_steps: int | None = Field(None, ge=1, description="Default: the paper's rule (10,000 steps, or 1 epoch below 160,000 examples).")
    num_epochs: float | None = Field(None, gt=0, description="Train this many epochs instead of max_steps.")
    mixing: Literal["first_exhausted", "all_exhausted"] = Field(
        "first_exhausted",
        description="With several datasets: sample by weight until the first source runs out (no example repeats), "
        "or until every source has been seen once (smaller sources repeat).",
    )
    padding_free: bool = Field(
        True, description="Concatenate each micro-batch's examples into one row without pad tokens (still "
        "`effective_batch_size` examples per step); false: padded batches grouped by length."
    )
    packing: bool = Field(
        False, description="TRL best-fit packing into rows of max_length tokens; a step then holds "
        "`effective_batch_size` packed rows, not examples (off: the paper counts examples)."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute activations in backward (non-reentrant): less memory, ~1.6x the compute. "
        "auto: on a GPU, measure the model's activations before the first step and checkpoint only as many layers "
        "as the budget needs (none when it all fits); on CPU without max_memory_gib, every layer.")
    max_memory_gib: float | None = Field(
        None, gt=0, description="Memory budget of gradient_checkpointing: auto, per process (e.g. 20 on a 24 GB card); "
        "none: what the GPU has free.")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "varlen", "eager"] = Field(
        "auto", description="auto: flash_attention_2 with CUDA when flash-attn is installed; else, for padding-free "
        "batches on CUDA, varlen (PyTorch's own FlashAttention varlen kernel, torch >= 2.10); else sdpa."
    )
    use_liger_kernel: bool | Literal["auto"] = Field(
        "auto", description="Liger Triton kernels (RMSNorm, RoPE, SwiGLU); auto: when installed and CUDA is present."
    )
    save_steps: int = Field(500, ge=1, description="Checkpoint every N optimizer steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (oldest deleted first).")
    logging_steps: int = Field(10, ge=1, description="Log loss, learning rate and grad norm every N steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = Field(
        default_factory=list, description="Experiment trackers the Trainer logs to (TRL passes them on); tensorboard "
        "writes event files to train/tensorboard. Each needs its package (tensorboard, wandb, mlflow, trackio).")
    merge: bool = Field(False, description="Also write a merged bf16 model (train/merged).")
    seed: int = Field(42, description="Seed of adapter init, data order and dataset mixing.")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainConfig:
        if self.max_steps is not None and self.num_epochs is not None:
            raise ValueError("set at most one of `max_steps` and `num_epochs`")
        if self.packing and (self.max_prompt_length or self.max_completion_length):
            raise ValueError("max_prompt_length / max_completion_length cut each example; with packing: true "
                             "examples are packed whole, so drop them or set packing: false")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.model = maybe_local_path(base, self.model)
        self.tokenizer = maybe_local_path(base, self.tokenizer)
        for source in self.datasets:
            if source.path != "generate":
                source.path = maybe_local_path(base, source.path)
        if self.gguf_file and Path(self.gguf_file).is_absolute():
            self.gguf_file = local_path(base, self.gguf_file)
