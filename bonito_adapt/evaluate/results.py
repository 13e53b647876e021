"""What the evaluate stage keeps of lm-eval's output: per-task summaries and per-sample records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..rundir import atomic_write_text

__all__ = ["results_summary", "sample_record", "write_samples"]


def _metric_name(key: str) -> str | None:
    """lm-eval keys are `metric,filter`; keep `metric` (or `metric/filter`), drop stderr and aliases."""
    if "," not in key or "_stderr" in key:
        return None
    metric, filter_name = key.split(",", 1)
    return metric if filter_name == "none" else f"{metric}/{filter_name}"


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for key, value in entry.items()
            if (name := _metric_name(key)) and isinstance(value, (int, float))}


def results_summary(raw: dict[str, Any], task: str) -> dict[str, Any]:
    """Per-template metrics and their average for one requested task or group, from lm-eval's results.

    Returns `{"templates": {leaf task: {metric: value}}, "average": {metric: value}, "examples": n}`,
    values as fractions in [0, 1]. For a group, the average is lm-eval's group aggregate (the
    unweighted mean over templates for the shipped benchmarks); for a single task it equals the task.
    """
    results = raw["results"]
    leaves = [name for name in raw.get("group_subtasks", {}).get(task, []) if name in results] or [task]
    templates = {leaf: _metrics(results[leaf]) for leaf in leaves}
    average = _metrics(results.get(task, {})) if task in results and len(leaves) > 1 else {}
    if not average:
        names = sorted({metric for values in templates.values() for metric in values})
        average = {metric: sum(v[metric] for v in templates.values() if metric in v)
                   / sum(1 for v in templates.values() if metric in v) for metric in names}
    examples = {leaf: raw.get("n-samples", {}).get(leaf, {}).get("effective") for leaf in leaves}
    return {"templates": templates, "average": average, "examples": max((n for n in examples.values() if n), default=0)}


def sample_record(template: str, sample: dict[str, Any]) -> dict[str, Any]:
    """One evaluated example: `context`, the exact string the model was given (wrapper, BOS text under the
    paper protocol, and all); for ranked choice `continuations`, the exact strings scored after it (EOS
    text included under the paper protocol), their `loglikelihoods`, the `prediction` (argmax, first on
    ties) and `answer_choices` (the template's choices); for generation the raw `prediction`."""
    arguments = sample.get("arguments") or []
    record = {"template": template, "doc_id": sample.get("doc_id"), "target": sample.get("target")}
    if arguments:
        record["context"] = arguments[0][0]
    scores = sample.get("filtered_resps") or []
    if arguments and all(isinstance(s, (list, tuple)) and len(s) == 2 for s in scores) and len(arguments) == len(scores):
        # multiple choice: one (loglikelihood, is_greedy) per choice; the prediction is the argmax
        loglikelihoods = [float(s[0]) for s in scores]
        continuations = [arg[1] for arg in arguments]
        best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        record.update(continuations=continuations, loglikelihoods=loglikelihoods, prediction=best,
                      prediction_text=continuations[best])
        doc = sample.get("doc") or {}
        if isinstance(doc, dict) and isinstance(doc.get("paper_choices"), list):
            record["answer_choices"] = doc["paper_choices"]
    else:
        record["prediction"] = scores[0] if len(scores) == 1 else scores
    for key in ("acc", "exact_match", "f1"):
        if isinstance(sample.get(key), (int, float)):  # multiple choice keeps f1 as a (gold, pred) pair
            record[key] = float(sample[key])
    return record


def write_samples(path: Path, samples: dict[str, list[dict[str, Any]]]) -> int:
    lines = [json.dumps(sample_record(template, sample), default=str)
             for template, items in sorted(samples.items()) for sample in items]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)
