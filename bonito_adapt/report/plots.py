"""The report's plots: training loss per step, and F1 per benchmark next to the reference numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..rundir import atomic_output
from .paper import REFERENCE_F1, REFERENCE_TARGET
from .runs import loss_points

__all__ = ["plot_loss", "plot_metrics"]


def plot_loss(runs: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(r["name"], loss_points(r["log_history"]), loss_points(r["log_history"], "eval_loss")) for r in runs]
    series = [s for s in series if s[1]]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, train_points, eval_points in series:
        steps, losses = [p[0] for p in train_points], [p[1] for p in train_points]
        line, = ax.plot(steps, losses, marker="." if len(steps) < 40 else None, label=f"{name} (train)")
        if eval_points:
            ax.plot([p[0] for p in eval_points], [p[1] for p in eval_points], linestyle="--", marker="o", color=line.get_color(), label=f"{name} (eval)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None)
    plt.close(fig)
    return True


def plot_metrics(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]],
                  paper_numbers: bool, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_key = {(r["run"], r["benchmark"]): r for r in rows}
    bars: list[tuple[str, list[float | None], dict[str, Any]]] = []
    multi = len(runs) > 1
    for run_info in runs:
        prefix = f"{run_info['name']} " if multi else ""
        for model in ("base", "adapted"):
            values = [by_key[(run_info["name"], t)][f"{model}_f1"] for t in benchmarks]
            if any(v is not None for v in values):
                bars.append((f"{prefix}{model}", values, {}))
    if paper_numbers and any(t in REFERENCE_F1 for t in benchmarks):
        for index, model in enumerate(("base", "adapted")):
            values = [REFERENCE_F1[t][index] if t in REFERENCE_F1 else None for t in benchmarks]
            bars.append((f"model card {model} ({REFERENCE_TARGET})", values,
                         {"color": "0.75" if model == "base" else "0.45", "hatch": "//", "edgecolor": "white"}))
    if not bars or not benchmarks:
        return False
    x = np.arange(len(benchmarks))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(benchmarks) + 2), 4.5), dpi=120)
    for index, (label, values, style) in enumerate(bars):
        heights = [v if v is not None else 0.0 for v in values]
        drawn = ax.bar(x - 0.4 + width * (index + 0.5), heights, width, label=label, **style)
        for rect, value in zip(drawn, values, strict=True):
            if value is not None:
                ax.annotate(f"{value:.0f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(benchmarks, rotation=20, ha="right")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("F1 per benchmark (mean over prompt templates)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None)
    plt.close(fig)
    return True
