"""Recipe section `report`: paper-style tables and plots."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .._schema import Section, maybe_local_path

__all__ = ["ReportConfig"]


class ReportConfig(Section):
    """Stage `report`."""

    compare_runs: list[str] = Field(default_factory=list, description="Other run directories to put in the same table.")
    paper_numbers: bool = Field(True, description="Show the paper's Mistral-7B numbers where the benchmark matches.")
    plots: bool = Field(True, description="Write PNG plots (needs matplotlib).")

    def resolve_paths(self, base: Path) -> None:
        self.compare_runs = [maybe_local_path(base, r) for r in self.compare_runs]
