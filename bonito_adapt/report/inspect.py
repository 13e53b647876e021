"""The "Generated tasks" page: what a person should look at before training on synthetic data.

Bonito's model card asks users to inspect the generated tasks. From a run's `generate/` folder
(`tasks.jsonl`, the shards, `dropped.jsonl`) this page shows a seeded random sample of tasks (passage
excerpt, input, output), failed generations with the reason each did not parse, the answer distribution
of closed-answer task types (the skew a model would learn), input/output lengths, per-document counts
and what the filters dropped.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ..generate.filters import CLOSED_ANSWER_TYPES, answer_label, failure_reason
from .tables import markdown_table

__all__ = ["generated_tasks_page"]

SAMPLE_SIZE = 10
FAILED_SAMPLE = 5


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _cell(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _lengths(values: list[int]) -> str:
    if not values:
        return "–"
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"min {min(values)}, median {quartiles[1]:.0f}, max {max(values)} (mean {statistics.mean(values):.0f})"


def generated_tasks_page(run_info: dict[str, Any], out: Path, plots: bool, seed: int = 0) -> str | None:
    """Write `<out>/generated_tasks[-<run>].md` for one run; return its file name, None without tasks."""
    from ..rundir import atomic_write_text

    generate_dir = Path(run_info["dir"]) / "generate"
    tasks = _read_jsonl(generate_dir / "tasks.jsonl")
    shard_rows = [row for path in sorted((generate_dir / "shards").glob("shard-*.jsonl")) for row in _read_jsonl(path)]
    if not tasks and not shard_rows:
        return None
    name = "generated_tasks.md" if run_info.get("index", 0) == 0 else f"generated_tasks-{run_info['index']}.md"
    rng = random.Random(seed)
    lines = [f"# Generated tasks — {run_info['name']}", "",
             f"From `{generate_dir}`: {len(tasks)} tasks kept of {len(shard_rows)} generations "
             f"({sum(1 for r in shard_rows if r.get('parsed'))} parsed). Read a sample before training on them.", ""]

    lines += [f"## A random sample ({min(SAMPLE_SIZE, len(tasks))} of {len(tasks)}, seed {seed})", ""]
    if tasks:
        sample = rng.sample(tasks, min(SAMPLE_SIZE, len(tasks)))
        lines += [markdown_table(["source", "passage (start)", "input", "output"],
                                 [[_cell(t.get("source_id", ""), 40), _cell(t.get("context", ""), 120),
                                   _cell(t["input"], 300), _cell(t["output"], 120)] for t in sample]), ""]

    closed = [t for t in tasks if t.get("task_type") in CLOSED_ANSWER_TYPES]
    if closed:
        counts = Counter(answer_label(t["output"]) for t in closed)
        total = sum(counts.values())
        lines += ["## Answers", "",
                  "A model trained on these learns this distribution: check that it is not one answer.", "",
                  markdown_table(["answer", "tasks", "share"],
                                 [[_cell(label or "(empty)", 60), str(n), f"{100 * n / total:.1f}%"]
                                  for label, n in counts.most_common(15)]), ""]
        top, top_n = counts.most_common(1)[0]
        if len(counts) == 1 or top_n / total >= 0.6:
            lines += [f"**Skewed:** {100 * top_n / total:.0f}% of the tasks answer {top!r}. Consider "
                      "`generate.balance_labels: 1.0` (even answers) or more passages.", ""]

    failed = [r for r in shard_rows if not r.get("parsed")]
    lines += [f"## Failed generations ({len(failed)} of {len(shard_rows)})", ""]
    if failed:
        reasons = Counter(failure_reason(r.get("generation", "")) for r in failed)
        lines += [markdown_table(["why it did not parse", "generations"], [[_cell(reason, 120), str(n)]
                                                                          for reason, n in reasons.most_common()]), ""]
        examples = rng.sample(failed, min(FAILED_SAMPLE, len(failed)))
        lines += [markdown_table(["generation", "why"], [[_cell(r.get("generation", ""), 300),
                                                          _cell(failure_reason(r.get("generation", "")), 120)]
                                                         for r in examples]), ""]

    input_words = [len(t["input"].split()) for t in tasks]
    output_words = [len(t["output"].split()) for t in tasks]
    lines += ["## Lengths (words)", "", markdown_table(["part", "lengths"], [["input", _lengths(input_words)],
                                                                             ["output", _lengths(output_words)]]), ""]
    if plots and tasks:
        image = _plot_lengths(input_words, output_words, out / name.replace(".md", "_lengths.png"))
        if image:
            lines += [f"![lengths]({image})", ""]

    per_document = Counter(t.get("source_id", "") for t in tasks)
    if per_document:
        values = sorted(per_document.values())
        lines += ["## Tasks per document", "",
                  f"{len(per_document)} documents gave tasks: {_lengths(values)} tasks each.", "",
                  markdown_table(["document", "tasks"], [[_cell(doc, 80), str(n)]
                                                         for doc, n in per_document.most_common(10)]), ""]

    dropped = _read_jsonl(generate_dir / "dropped.jsonl")
    lines += ["## Dropped by filters", ""]
    if dropped:
        by_filter = Counter(r.get("dropped_by", "?") for r in dropped)
        lines += [markdown_table(["filter", "tasks dropped"], [[f, str(n)] for f, n in by_filter.most_common()]), "",
                  "The dropped rows are in `generate/dropped.jsonl`.", ""]
    else:
        lines += ["None.", ""]
    atomic_write_text(out / name, "\n".join(lines).rstrip() + "\n")
    return name


def _plot_lengths(inputs: list[int], outputs: list[int], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..rundir import atomic_output

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, values, title in ((axes[0], inputs, "input words"), (axes[1], outputs, "output words")):
        axis.hist(values, bins=min(30, max(5, len(set(values)))), color="#4c72b0")
        axis.set_title(title)
        axis.set_ylabel("tasks")
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path.name
