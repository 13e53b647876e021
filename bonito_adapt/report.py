"""Stage `report` and `python -m bonito_adapt report RUN_DIR...`: paper-style tables and plots.

Reads what the other stages left in each run directory, tolerating any of it being absent:
`recipe.yaml`, `evaluate/results.json`, `generate/stats.json`, `train/log_history.json` and the
stage manifests. Writes into the report folder::

    index.md          everything below, linked
    results.csv       one row per (run, benchmark): F1 and accuracy of base / adapted, delta, paper's numbers
    loss.png          training loss per step, one line per run (when a run has a log history)
    metrics.png       F1 per benchmark, base vs adapted per run, with the paper's numbers

Numbers are shown as percentages (F1 is macro-F1 for classification, token F1 for SQuADShifts),
like the paper's tables.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .config import Recipe
from .errors import UserError
from .rundir import StageRun, atomic_output, atomic_write_text, read_manifest

__all__ = ["run", "report_runs", "PAPER_F1", "PAPER_MODEL", "load_run"]

PAPER_MODEL = "Mistral-7B-v0.1"
# The paper's F1 (Mistral-7B-v0.1 -> + Llama-3.1-8B-bonito-v1 synthetic tasks), in percent.
PAPER_F1: dict[str, tuple[float, float]] = {
    "pubmed_qa": (25.6, 44.5),
    "privacy_qa": (44.1, 53.7),
    "squadshifts_nyt": (24.2, 80.7),
    "squadshifts_amazon": (17.5, 72.9),
    "squadshifts_reddit": (12.0, 70.1),
    "contract_nli": (31.2, 69.7),
    "vitaminc": (38.9, 73.3),
}
_BENCHMARK_ORDER = list(PAPER_F1)
_STAGES = ("generate", "train", "evaluate", "report")


# --------------------------------------------------------------------------- reading runs

def _read_json(path: Path) -> Any:
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
    results = _read_json(run_dir / "evaluate" / "results.json")
    results = results if isinstance(results, dict) else None
    target = None
    if results:
        target = (results.get("config") or {}).get("base_model")
        target = target or next((m.get("model") for m in (results.get("config") or {}).get("models", [])
                                 if isinstance(m, dict)), None)
    target = target or ((recipe.get("evaluate") or {}).get("base_model")) or ((recipe.get("train") or {}).get("model"))
    history = _read_json(run_dir / "train" / "log_history.json")
    stats = _read_json(run_dir / "generate" / "stats.json")
    return {
        "dir": run_dir,
        "name": recipe.get("name") or run_dir.name,
        "target_model": target,
        "results": results,
        "stats": stats if isinstance(stats, dict) else None,
        "log_history": history if isinstance(history, list) else None,
        "manifests": {stage: read_manifest(run_dir / stage) for stage in _STAGES},
    }


def _is_paper_model(model: str | None) -> bool:
    return bool(model) and Path(str(model).rstrip("/")).name.lower() == PAPER_MODEL.lower()


def _score(results: dict[str, Any] | None, model: str, task: str, metric: str) -> float | None:
    """A task's template-averaged metric, in percent, or None."""
    try:
        value = results["models"][model][task]["average"][metric]
    except (KeyError, TypeError):
        return None
    return 100.0 * float(value) if isinstance(value, (int, float)) else None


def _accuracy_metric(results: dict[str, Any] | None, task: str) -> str:
    for model in ("base", "adapted"):
        average = (((results or {}).get("models") or {}).get(model) or {}).get(task, {}).get("average", {})
        if "acc" in average:
            return "acc"
        if "exact_match" in average:
            return "exact_match"
    return "acc"


def _benchmarks(runs: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for run_info in runs:
        for model_results in ((run_info["results"] or {}).get("models") or {}).values():
            for task in model_results or {}:
                if task not in seen:
                    seen.append(task)
    return sorted(seen, key=lambda t: (_BENCHMARK_ORDER.index(t) if t in _BENCHMARK_ORDER else len(_BENCHMARK_ORDER), t))


# --------------------------------------------------------------------------- tables

def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _delta(base: float | None, adapted: float | None) -> float | None:
    return adapted - base if base is not None and adapted is not None else None


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _score_rows(runs: list[dict[str, Any]], benchmarks: list[str], paper_numbers: bool) -> list[dict[str, Any]]:
    """One record per (run, benchmark) with every number the tables and the CSV show."""
    rows = []
    for run_info in runs:
        results = run_info["results"]
        for task in benchmarks:
            accuracy = _accuracy_metric(results, task)
            base_f1, adapted_f1 = _score(results, "base", task, "f1"), _score(results, "adapted", task, "f1")
            base_acc, adapted_acc = _score(results, "base", task, accuracy), _score(results, "adapted", task, accuracy)
            paper = PAPER_F1.get(task) if paper_numbers else None
            rows.append({
                "run": run_info["name"], "benchmark": task, "target_model": run_info["target_model"] or "",
                "base_f1": base_f1, "adapted_f1": adapted_f1, "delta_f1": _delta(base_f1, adapted_f1),
                "accuracy_metric": accuracy, "base_accuracy": base_acc, "adapted_accuracy": adapted_acc,
                "delta_accuracy": _delta(base_acc, adapted_acc),
                "paper_base_f1": paper[0] if paper else None, "paper_adapted_f1": paper[1] if paper else None,
                "paper_setup_matches": bool(paper) and _is_paper_model(run_info["target_model"]),
            })
    return rows


def _results_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["run", "benchmark", "target_model", "base_f1", "adapted_f1", "delta_f1", "accuracy_metric",
              "base_accuracy", "adapted_accuracy", "delta_accuracy", "paper_base_f1", "paper_adapted_f1",
              "paper_setup_matches"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    return buffer.getvalue()


def _f1_table(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]],
              paper_numbers: bool) -> tuple[str, str]:
    """The main table (rows benchmarks, F1 columns per run, then the paper's) and its footnote."""
    by_key = {(r["run"], r["benchmark"]): r for r in rows}
    multi = len(runs) > 1
    header = ["benchmark"]
    for run_info in runs:
        prefix = f"{run_info['name']}: " if multi else ""
        header += [f"{prefix}base", f"{prefix}adapted", f"{prefix}Δ"]
    show_paper = paper_numbers and any(t in PAPER_F1 for t in benchmarks)
    all_match = all(_is_paper_model(r["target_model"]) for r in runs)
    if show_paper:
        label = "paper" if all_match else "paper, reference only"
        header += [f"{label}: base", f"{label}: adapted"]
    table_rows = []
    for task in benchmarks:
        row = [task]
        for run_info in runs:
            record = by_key[(run_info["name"], task)]
            row += [_fmt(record["base_f1"]), _fmt(record["adapted_f1"]), _fmt(record["delta_f1"], signed=True)]
        if show_paper:
            paper = PAPER_F1.get(task)
            row += [_fmt(paper[0]), _fmt(paper[1])] if paper else ["–", "–"]
        table_rows.append(row)
    note = "F1 in percent, averaged over each benchmark's prompt templates; Δ = adapted − base."
    if show_paper:
        note += (f" Paper: {PAPER_MODEL} before and after training on Llama-3.1-8B-bonito-v1 synthetic tasks "
                 "(Nayak et al., 2024).")
        if not all_match:
            others = sorted({str(r['target_model'] or 'unknown') for r in runs if not _is_paper_model(r["target_model"])})
            note += (f" The target model here ({', '.join(others)}) is not {PAPER_MODEL}, so the paper's numbers "
                     "are a reference point, not a reproduction target.")
    return _markdown_table(header, table_rows), note


def _accuracy_table(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]]) -> str:
    by_key = {(r["run"], r["benchmark"]): r for r in rows}
    multi = len(runs) > 1
    header = ["benchmark", "metric"]
    for run_info in runs:
        prefix = f"{run_info['name']}: " if multi else ""
        header += [f"{prefix}base", f"{prefix}adapted", f"{prefix}Δ"]
    table_rows = []
    for task in benchmarks:
        metric = by_key[(runs[0]["name"], task)]["accuracy_metric"]
        row = [task, "accuracy" if metric == "acc" else "exact match"]
        for run_info in runs:
            record = by_key[(run_info["name"], task)]
            row += [_fmt(record["base_accuracy"]), _fmt(record["adapted_accuracy"]),
                    _fmt(record["delta_accuracy"], signed=True)]
        table_rows.append(row)
    return _markdown_table(header, table_rows)


def _template_tables(run_info: dict[str, Any], benchmarks: list[str]) -> str:
    models = (run_info["results"] or {}).get("models") or {}
    parts = []
    for task in benchmarks:
        templates: list[str] = []
        for model_results in models.values():
            for name in ((model_results or {}).get(task) or {}).get("templates", {}):
                if name not in templates:
                    templates.append(name)
        if len(templates) < 2:
            continue
        header = ["template"] + [f"{model} {metric}" for model in models for metric in ("f1", "acc")]
        rows = []
        for name in templates:
            row = [name]
            for model in models:
                values = ((models[model] or {}).get(task) or {}).get("templates", {}).get(name, {})
                row += [_fmt(100 * values["f1"]) if "f1" in values else "–",
                        _fmt(100 * values["acc"]) if "acc" in values else "–"]
            rows.append(row)
        parts.append(f"**{task}**\n\n" + _markdown_table(header, rows))
    return "\n\n".join(parts)


def _flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


def _stat(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _generation_table(runs: list[dict[str, Any]]) -> str | None:
    flats = [_flatten(r["stats"]) if r["stats"] else None for r in runs]
    if not any(flats):
        return None
    keys: list[str] = []
    for flat in flats:
        for key in flat or {}:
            if key not in keys:
                keys.append(key)
    header = ["statistic"] + [r["name"] for r in runs]
    rows = [[key] + [_stat(flat[key]) if flat and key in flat else "–" for flat in flats] for key in keys]
    return _markdown_table(header, rows)


def _loss_points(history: list[dict[str, Any]] | None, key: str = "loss") -> list[tuple[float, float]]:
    points = []
    for entry in history or []:
        if isinstance(entry, dict) and isinstance(entry.get(key), (int, float)) and isinstance(entry.get("step"), (int, float)):
            points.append((float(entry["step"]), float(entry[key])))
    return points


def _training_table(runs: list[dict[str, Any]]) -> str | None:
    rows = []
    for run_info in runs:
        points = _loss_points(run_info["log_history"])
        if not points:
            continue
        final = next((e for e in reversed(run_info["log_history"]) if isinstance(e, dict) and "train_loss" in e), {})
        rows.append([run_info["name"], str(int(points[-1][0])), f"{points[0][1]:.4f}", f"{points[-1][1]:.4f}",
                     f"{final['train_loss']:.4f}" if isinstance(final.get("train_loss"), (int, float)) else "–"])
    if not rows:
        return None
    return _markdown_table(["run", "last logged step", "first loss", "last loss", "mean train loss"], rows)


# --------------------------------------------------------------------------- plots

def _plot_loss(runs: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(r["name"], _loss_points(r["log_history"]), _loss_points(r["log_history"], "eval_loss")) for r in runs]
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


def _plot_metrics(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]],
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
    if paper_numbers and any(t in PAPER_F1 for t in benchmarks):
        for index, model in enumerate(("base", "adapted")):
            values = [PAPER_F1[t][index] if t in PAPER_F1 else None for t in benchmarks]
            bars.append((f"paper {model} ({PAPER_MODEL})", values,
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


# --------------------------------------------------------------------------- report

def _stage_status(run_info: dict[str, Any]) -> str:
    parts = []
    for stage in ("generate", "train", "evaluate"):
        manifest = run_info["manifests"].get(stage)
        if manifest:
            seconds = (manifest.get("timings") or {}).get("seconds")
            parts.append(f"{stage} ✓" + (f" ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else ""))
        else:
            parts.append(f"{stage} –")
    return ", ".join(parts)


def report_runs(run_dirs: list[str | Path], out_dir: str | Path | None = None, *,
                paper_numbers: bool = True, plots: bool = True) -> Path:
    """Write the report for one or more run directories (side by side); return the report folder."""
    if not run_dirs:
        raise UserError("report: give at least one run directory")
    paths = [Path(d) for d in run_dirs]
    for path in paths:
        if not path.is_dir():
            raise UserError(f"report: run directory {str(path)!r} does not exist; pass the output_dir of a recipe")
    runs = [load_run(path) for path in paths]
    names = [r["name"] for r in runs]
    for index, run_info in enumerate(runs):  # the same recipe name twice: tell the columns apart
        if names.count(run_info["name"]) > 1:
            run_info["name"] = f"{run_info['name']} ({run_info['dir'].name}#{index + 1})"
    out = Path(out_dir) if out_dir else paths[0] / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"report: cannot create the report folder {str(out)!r} ({error.strerror}); "
                        "pass --out a folder you can write to") from None

    benchmarks = _benchmarks(runs)
    rows = _score_rows(runs, benchmarks, paper_numbers)
    atomic_write_text(out / "results.csv", _results_csv(rows))

    have_loss = have_metrics = False
    plot_note = None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plot_note = "Plots skipped: matplotlib is not installed (`pip install 'bonito_adapt[report]'`)."
        else:
            have_loss = _plot_loss(runs, out / "loss.png")
            have_metrics = bool(benchmarks) and _plot_metrics(runs, benchmarks, rows, paper_numbers, out / "metrics.png")

    lines = ["# Adaptation report", ""]
    lines += ["## Runs", "", _markdown_table(
        ["run", "directory", "target model", "stages"],
        [[r["name"], f"`{r['dir']}`", f"`{r['target_model']}`" if r["target_model"] else "–", _stage_status(r)]
         for r in runs]), ""]
    if plot_note:
        lines += [plot_note, ""]

    lines += ["## Results", ""]
    if benchmarks:
        table, note = _f1_table(runs, benchmarks, rows, paper_numbers)
        lines += ["### F1", "", table, "", note, "", "Table as CSV: [results.csv](results.csv)", ""]
        if have_metrics:
            lines += ["![F1 per benchmark](metrics.png)", "", "Chart: [metrics.png](metrics.png)", ""]
        lines += ["### Accuracy / exact match", "", _accuracy_table(runs, benchmarks, rows), ""]
        for run_info in runs:
            details = _template_tables(run_info, benchmarks)
            if details:
                lines += [f"### Per template — {run_info['name']}", "", details, ""]
    else:
        lines += ["No evaluation results yet (`evaluate/results.json` is missing in every run).", ""]

    lines += ["## Generated tasks", ""]
    generation = _generation_table(runs)
    lines += [generation if generation else "No generation statistics (`generate/stats.json` is missing).", ""]

    lines += ["## Training", ""]
    training = _training_table(runs)
    lines += [training if training else "No training log (`train/log_history.json` is missing).", ""]
    if have_loss:
        lines += ["![training loss](loss.png)", "", "Chart: [loss.png](loss.png)", ""]
    atomic_write_text(out / "index.md", "\n".join(lines).rstrip() + "\n")
    return out


def run(recipe: Recipe, run_dir: Path, force: bool = False) -> Path:
    """The report of this run (plus `report.compare_runs`), in run_dir/report."""
    from rich.console import Console

    cfg = recipe.report
    if cfg is None:
        raise UserError("the recipe has no `report` section; add `report: {}`")
    console = Console(stderr=True)
    run_dir = Path(run_dir)
    run_dirs = [run_dir, *(Path(d) for d in cfg.compare_runs)]
    inputs = {}
    for index, path in enumerate(run_dirs):
        for stage in ("generate", "train", "evaluate"):
            manifest = read_manifest(path / stage)
            if manifest:
                inputs[f"{index}:{stage}"] = manifest["fingerprint"]
    stage = StageRun(run_dir, "report", config=cfg, inputs=inputs)
    if stage.is_current() and not force:
        console.print(f"report: skipped (up to date) — {stage.dir / 'index.md'}")
        return stage.dir
    stage.start()
    out = report_runs(run_dirs, out_dir=stage.dir, paper_numbers=cfg.paper_numbers, plots=cfg.plots)
    stage.finish(counts={"runs": len(run_dirs)},
                 outputs={"index": "index.md", "csv": "results.csv",
                          "plots": sorted(p.name for p in out.glob("*.png"))})
    console.print(f"report: wrote {out / 'index.md'}")
    return out
