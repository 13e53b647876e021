"""What the report reads from a run directory, tolerating any of it being absent: `recipe.yaml`,
`evaluate/results.json`, `generate/stats.json`, `train/log_history.json` and the stage manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..benchmarks import BENCHMARK_NAMES
from ..rundir import read_manifest

__all__ = ["load_run", "read_json", "score", "accuracy_metric", "benchmarks_of", "loss_points", "STAGES"]

STAGES = ("generate", "train", "evaluate", "report")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report uses from one run directory; missing pieces are None."""
    import yaml

    run_dir = Path(run_dir)
    recipe = None
    if (run_dir / "recipe.yaml").is_file():
        try:
            recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError:
            recipe = None
    recipe = recipe if isinstance(recipe, dict) else {}
    results = read_json(run_dir / "evaluate" / "results.json")
    results = results if isinstance(results, dict) else None
    target = None
    if results:
        target = (results.get("config") or {}).get("base_model")
        target = target or next((m.get("model") for m in (results.get("config") or {}).get("models", [])
                                 if isinstance(m, dict)), None)
    target = target or ((recipe.get("evaluate") or {}).get("base_model")) or ((recipe.get("train") or {}).get("model"))
    history = read_json(run_dir / "train" / "log_history.json")
    stats = read_json(run_dir / "generate" / "stats.json")
    return {
        "dir": run_dir,
        "name": recipe.get("name") or run_dir.name,
        "target_model": target,
        "results": results,
        "stats": stats if isinstance(stats, dict) else None,
        "log_history": history if isinstance(history, list) else None,
        "manifests": {stage: read_manifest(run_dir / stage) for stage in STAGES},
    }


def score(results: dict[str, Any] | None, model: str, task: str, metric: str) -> float | None:
    """A task's template-averaged metric, in percent, or None."""
    try:
        value = results["models"][model][task]["average"][metric]
    except (KeyError, TypeError):
        return None
    return 100.0 * float(value) if isinstance(value, (int, float)) else None


def accuracy_metric(results: dict[str, Any] | None, task: str) -> str:
    for model in ("base", "adapted"):
        average = (((results or {}).get("models") or {}).get(model) or {}).get(task, {}).get("average", {})
        if "acc" in average:
            return "acc"
        if "exact_match" in average:
            return "exact_match"
    return "acc"


def benchmarks_of(runs: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for run_info in runs:
        for model_results in ((run_info["results"] or {}).get("models") or {}).values():
            for task in model_results or {}:
                if task not in seen:
                    seen.append(task)
    return sorted(seen, key=lambda t: (BENCHMARK_NAMES.index(t) if t in BENCHMARK_NAMES else len(BENCHMARK_NAMES), t))

def loss_points(history: list[dict[str, Any]] | None, key: str = "loss") -> list[tuple[float, float]]:
    points = []
    for entry in history or []:
        if isinstance(entry, dict) and isinstance(entry.get(key), (int, float)) and isinstance(entry.get("step"), (int, float)):
            points.append((float(entry["step"]), float(entry[key])))
    return points
