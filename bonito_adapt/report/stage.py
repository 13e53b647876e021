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

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..rundir import StageRun, atomic_write_text, read_manifest
from .html import write_html
from .inspect import generated_tasks_page
from .plots import plot_loss, plot_metrics
from .runs import benchmarks_of, load_run
from .tables import (
    accuracy_table,
    f1_table,
    generation_table,
    markdown_table,
    results_csv,
    score_rows,
    stage_status,
    template_tables,
    training_table,
)

if TYPE_CHECKING:
    from ..config import Recipe

__all__ = ["run", "report_runs"]


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

    benchmarks = benchmarks_of(runs)
    rows = score_rows(runs, benchmarks, paper_numbers)
    atomic_write_text(out / "results.csv", results_csv(rows))

    have_loss = have_metrics = False
    plot_note = None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plot_note = "Plots skipped: matplotlib is not installed (`pip install 'bonito_adapt[report]'`)."
        else:
            have_loss = plot_loss(runs, out / "loss.png")
            have_metrics = bool(benchmarks) and plot_metrics(runs, benchmarks, rows, paper_numbers, out / "metrics.png")

    lines = ["# Adaptation report", ""]
    lines += ["## Runs", "", markdown_table(
        ["run", "directory", "target model", "stages"],
        [[r["name"], f"`{r['dir']}`", f"`{r['target_model']}`" if r["target_model"] else "–", stage_status(r)]
         for r in runs]), ""]
    if plot_note:
        lines += [plot_note, ""]

    lines += ["## Results", ""]
    if benchmarks:
        table, note = f1_table(runs, benchmarks, rows, paper_numbers)
        lines += ["### F1", "", table, "", note, "", "Table as CSV: [results.csv](results.csv)", ""]
        if have_metrics:
            lines += ["![F1 per benchmark](metrics.png)", "", "Chart: [metrics.png](metrics.png)", ""]
        lines += ["### Accuracy / exact match", "", accuracy_table(runs, benchmarks, rows), ""]
        for run_info in runs:
            details = template_tables(run_info, benchmarks)
            if details:
                lines += [f"### Per template — {run_info['name']}", "", details, ""]
    else:
        lines += ["No evaluation results yet (`evaluate/results.json` is missing in every run).", ""]

    lines += ["## Generated tasks", ""]
    generation = generation_table(runs)
    lines += [generation if generation else "No generation statistics (`generate/stats.json` is missing).", ""]
    pages = []
    for index, run_info in enumerate(runs):
        page = generated_tasks_page({**run_info, "index": index}, out, plots=plots and plot_note is None)
        if page:
            pages.append(page)
            lines += [f"Inspect the tasks of {run_info['name']} (a sample, answers, failed generations, lengths): "
                      f"[{page}]({page})", ""]

    lines += ["## Training", ""]
    training = training_table(runs)
    lines += [training if training else "No training log (`train/log_history.json` is missing).", ""]
    if have_loss:
        lines += ["![training loss](loss.png)", "", "Chart: [loss.png](loss.png)", ""]
    index_markdown = "\n".join(lines).rstrip() + "\n"
    atomic_write_text(out / "index.md", index_markdown)
    try:
        write_html(out, index_markdown, pages, runs)
    except ImportError:  # `markdown` comes with the report extra
        pass
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
