"""Run a recipe's stages in order; each stage decides itself whether it is up to date."""

from __future__ import annotations

import importlib
from pathlib import Path

from .config import STAGES, Recipe
from .errors import UserError
from .rundir import atomic_write_text, prepare_run_dir

__all__ = ["run_stages", "select_stages"]


def select_stages(recipe: Recipe, requested: str | None) -> list[str]:
    """Parse `--stages generate,train` against what the recipe configures."""
    configured = recipe.stages()
    if not requested:
        if not configured:
            raise UserError("the recipe configures no stage; add a `generate`, `train`, `evaluate` or `report` section")
        return configured
    wanted = [s.strip() for s in requested.split(",") if s.strip()]
    for stage in wanted:
        if stage not in STAGES:
            raise UserError(f"--stages: unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        if stage not in configured:
            raise UserError(f"--stages: the recipe has no `{stage}` section; add one or drop {stage!r}")
    return [s for s in STAGES if s in wanted]


def run_stages(recipe: Recipe, stages: list[str], force: bool = False) -> dict[str, Path]:
    """Run `stages` in pipeline order and return each stage's artifact folder. Every static problem of the
    recipe stops the run before the first stage starts (`checks.py`)."""
    from .checks import check_recipe

    check_recipe(recipe, stages)
    run_dir = prepare_run_dir(recipe.run_dir)
    import yaml

    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    artifacts = {}
    for stage in stages:
        module = importlib.import_module(f"bonito_adapt.{stage}")
        artifacts[stage] = module.run(recipe, run_dir, force=force)
    return artifacts
