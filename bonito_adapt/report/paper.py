"""The reference numbers beside which the report puts a run's, and whether the run's setup matches.

The numbers are the `BatsResearch/Llama-3.1-8B-bonito-v1` model card's table (Mistral-7B-v0.1
target, F1 in percent, before and after Q-LoRA on that Bonito model's tasks), from the benchmark
registry (`bonito_adapt.benchmarks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..benchmarks import BENCHMARKS, REFERENCE_GENERATOR, REFERENCE_SOURCE, REFERENCE_TARGET

__all__ = ["REFERENCE_F1", "REFERENCE_TARGET", "REFERENCE_GENERATOR", "REFERENCE_SOURCE", "PAPER_TRAINING",
           "PAPER_WRAPPERS", "is_paper_model", "setup_differences"]

# benchmark -> (Mistral-7B-v0.1 F1, + Llama-3.1-8B-bonito-v1 tasks F1), in percent (model card).
REFERENCE_F1: dict[str, tuple[float, float]] = {name: b.reference_f1 for name, b in BENCHMARKS.items()}


def is_paper_model(model: str | None) -> bool:
    return bool(model) and Path(str(model).rstrip("/")).name.lower() == REFERENCE_TARGET.lower()


# The paper's adaptation settings (training/train_decoder.py @ d185657) in the train stage's terms: what a
# run's train manifest must hold for its numbers to be comparable (the recipes/<benchmark>.yaml settings).
PAPER_TRAINING: dict[str, Any] = {
    "quantization": "4bit", "format": "bonito", "lora.r": 64, "lora.alpha": 16.0, "lora.dropout": 0.0,
    "lora.target_modules": "all-linear", "learning_rate": 1e-4, "lr_scheduler": "linear", "warmup_ratio": 0.0,
    "weight_decay": 0.0, "max_grad_norm": 0.3, "optimizer": "paged_adamw_32bit", "effective_batch_size": 16,
    "max_steps": 10000, "max_prompt_length": 1024, "max_completion_length": 1024,
}
# The wrappers the paper's evaluation code gives each model (base: the simple prompt; adapted: the adapter's).
PAPER_WRAPPERS = {"base": "instruct", "adapted": "bonito"}


def _setting(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def setup_differences(run_info: dict[str, Any], task: str) -> list[str]:
    """How a run's setup for `task` differs from the paper's: target model, templates and wrappers (the
    evaluate stage's protocol), and the training settings; empty when it matches."""
    differences = []
    if not is_paper_model(run_info["target_model"]):
        differences.append(f"target {run_info['target_model'] or 'unknown'} (paper: {REFERENCE_TARGET})")
    models = ((run_info["results"] or {}).get("models") or {})
    for model, wrapper in PAPER_WRAPPERS.items():
        summary = (models.get(model) or {}).get(task)
        if not summary:
            continue  # a missing result is shown as missing, not as a different setup
        if summary.get("protocol") != "paper":
            differences.append(f"{model} scored with protocol {summary.get('protocol', 'lm_eval (before paper templates)')}")
        elif summary.get("prompt_format") != wrapper:
            differences.append(f"{model} wrapper {summary.get('prompt_format')} (paper: {wrapper})")
        elif summary.get("squad_gold") not in (None, "first"):
            differences.append(f"{model} SQuAD references: {summary.get('squad_gold')} (paper: first)")
    train = (run_info["manifests"].get("train") or {}).get("config")
    if not isinstance(train, dict):
        differences.append("no train manifest")
    else:
        for key, expected in PAPER_TRAINING.items():
            if _setting(train, key) != expected:
                differences.append(f"train.{key} {_setting(train, key)} (paper: {expected})")
    return differences
