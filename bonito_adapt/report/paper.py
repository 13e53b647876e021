"""The reference numbers beside which the report puts a run's, and whether the run's setup matches.

The numbers are the `BatsResearch/Llama-3.1-8B-bonito-v1` model card's table (Mistral-7B-v0.1
target, F1 in percent, before and after Q-LoRA on that Bonito model's tasks), from the benchmark
registry (`bonito_adapt.benchmarks`).
"""

from __future__ import annotations

from pathlib import Path

from ..benchmarks import BENCHMARKS, REFERENCE_GENERATOR, REFERENCE_SOURCE, REFERENCE_TARGET

__all__ = ["REFERENCE_F1", "REFERENCE_TARGET", "REFERENCE_GENERATOR", "REFERENCE_SOURCE", "is_paper_model"]

# benchmark -> (Mistral-7B-v0.1 F1, + Llama-3.1-8B-bonito-v1 tasks F1), in percent (model card).
REFERENCE_F1: dict[str, tuple[float, float]] = {name: b.reference_f1 for name, b in BENCHMARKS.items()}


def is_paper_model(model: str | None) -> bool:
    return bool(model) and Path(str(model).rstrip("/")).name.lower() == REFERENCE_TARGET.lower()
