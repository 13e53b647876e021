"""Stage `evaluate`: score the base and the adapted model with lm-eval.

Parts: `config` (the recipe section), `tasks/` (the shipped lm-eval task YAMLs, their
`utils.py`, and the task index with local data files), `models` (the lm-eval model of each
evaluated model), `results` (summaries and per-sample records), `stage` (`run`).
"""

from .stage import run

__all__ = ["run"]
