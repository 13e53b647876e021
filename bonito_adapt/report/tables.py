"""The report's tables: F1 and accuracy per benchmark (base / adapted / delta, the reference numbers
beside them), per-template tables, generation and training statistics; as Markdown and CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from .paper import REFERENCE_F1, REFERENCE_SOURCE, setup_differences
from .runs import accuracy_metric, loss_points, score

__all__ = ["markdown_table", "score_rows", "results_csv", "f1_table", "accuracy_table", "template_tables",
           "generation_table", "training_table", "stage_status"]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _delta(base: float | None, adapted: float | None) -> float | None:
    return adapted - base if base is not None and adapted is not None else None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def score_rows(runs: list[dict[str, Any]], benchmarks: list[str], paper_numbers: bool) -> list[dict[str, Any]]:
    """One record per (run, benchmark) with every number the tables and the CSV show."""
    rows = []
    for run_info in runs:
        results = run_info["results"]
        for task in benchmarks:
            accuracy = accuracy_metric(results, task)
            base_f1, adapted_f1 = score(results, "base", task, "f1"), score(results, "adapted", task, "f1")
            base_acc, adapted_acc = score(results, "base", task, accuracy), score(results, "adapted", task, accuracy)
            paper = REFERENCE_F1.get(task) if paper_numbers else None
            differences = setup_differences(run_info, task) if paper else []
            rows.append({
                "run": run_info["name"], "benchmark": task, "target_model": run_info["target_model"] or "",
                "base_f1": base_f1, "adapted_f1": adapted_f1, "delta_f1": _delta(base_f1, adapted_f1),
                "accuracy_metric": accuracy, "base_accuracy": base_acc, "adapted_accuracy": adapted_acc,
                "delta_accuracy": _delta(base_acc, adapted_acc),
                "paper_base_f1": paper[0] if paper else None, "paper_adapted_f1": paper[1] if paper else None,
                "paper_setup_matches": bool(paper) and not differences,
                "paper_setup_differences": "; ".join(differences),
            })
    return rows


def results_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["run", "benchmark", "target_model", "base_f1", "adapted_f1", "delta_f1", "accuracy_metric",
              "base_accuracy", "adapted_accuracy", "delta_accuracy", "paper_base_f1", "paper_adapted_f1",
              "paper_setup_matches", "paper_setup_differences"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    return buffer.getvalue()


def f1_table(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]],
              paper_numbers: bool) -> tuple[str, str]:
    """The main table (rows benchmarks, F1 columns per run, then the paper's) and its footnote."""
    by_key = {(r["run"], r["benchmark"]): r for r in rows}
    multi = len(runs) > 1
    header = ["benchmark"]
    for run_info in runs:
        prefix = f"{run_info['name']}: " if multi else ""
        header += [f"{prefix}base", f"{prefix}adapted", f"{prefix}Δ"]
    show_paper = paper_numbers and any(t in REFERENCE_F1 for t in benchmarks)
    all_match = all(r["paper_setup_matches"] for r in rows if r["paper_base_f1"] is not None)
    if show_paper:
        label = "model card" if all_match else "model card, reference only"
        header += [f"{label}: base", f"{label}: adapted"]
    table_rows = []
    for task in benchmarks:
        row = [task]
        for run_info in runs:
            record = by_key[(run_info["name"], task)]
            row += [_fmt(record["base_f1"]), _fmt(record["adapted_f1"]), _fmt(record["delta_f1"], signed=True)]
        if show_paper:
            paper = REFERENCE_F1.get(task)
            row += [_fmt(paper[0]), _fmt(paper[1])] if paper else ["–", "–"]
        table_rows.append(row)
    note = "F1 in percent, averaged over each benchmark's prompt templates; Δ = adapted − base."
    if show_paper:
        note += f" Model card columns: the {REFERENCE_SOURCE} table (Mistral-7B-v0.1 target)."
        if not all_match:
            differing = sorted({f"{r['run']} / {r['benchmark']}: {r['paper_setup_differences']}" for r in rows
                                if r["paper_base_f1"] is not None and not r["paper_setup_matches"]})
            note += (" The setup here differs from the paper's, so its numbers are a reference point, not a "
                     "reproduction target: " + " | ".join(differing) + ".")
    return markdown_table(header, table_rows), note


def accuracy_table(runs: list[dict[str, Any]], benchmarks: list[str], rows: list[dict[str, Any]]) -> str:
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
    return markdown_table(header, table_rows)


def template_tables(run_info: dict[str, Any], benchmarks: list[str]) -> str:
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
        parts.append(f"**{task}**\n\n" + markdown_table(header, rows))
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


def generation_table(runs: list[dict[str, Any]]) -> str | None:
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
    return markdown_table(header, rows)


def training_table(runs: list[dict[str, Any]]) -> str | None:
    rows = []
    for run_info in runs:
        points = loss_points(run_info["log_history"])
        if not points:
            continue
        final = next((e for e in reversed(run_info["log_history"]) if isinstance(e, dict) and "train_loss" in e), {})
        rows.append([run_info["name"], str(int(points[-1][0])), f"{points[0][1]:.4f}", f"{points[-1][1]:.4f}",
                     f"{final['train_loss']:.4f}" if isinstance(final.get("train_loss"), (int, float)) else "–"])
    if not rows:
        return None
    return markdown_table(["run", "last logged step", "first loss", "last loss", "mean train loss"], rows)

def stage_status(run_info: dict[str, Any]) -> str:
    parts = []
    for stage in ("generate", "train", "evaluate"):
        manifest = run_info["manifests"].get(stage)
        if manifest:
            seconds = (manifest.get("timings") or {}).get("seconds")
            parts.append(f"{stage} ✓" + (f" ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else ""))
        else:
            parts.append(f"{stage} –")
    return ", ".join(parts)
