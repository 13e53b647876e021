"""Stage `report` and `python -m bonito_adapt report RUN_DIR...`: paper-style tables and plots.

Parts: `config` (the recipe section), `runs` (what a run directory holds), `tables`, `plots`,
`paper` (the reference numbers and whether a run's setup matches the paper's), `stage` (`run`,
`report_runs`).
"""

from .stage import report_runs, run

__all__ = ["run", "report_runs"]
