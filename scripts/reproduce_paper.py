"""Reproduce the Bonito paper's main table: run the seven benchmark recipes, then write the table.

    python scripts/reproduce_paper.py                                   # all seven, full runs
    python scripts/reproduce_paper.py --only pubmed_qa,contract_nli     # a subset
    python scripts/reproduce_paper.py --limit 20                        # smoke run: 20 documents, 20 eval examples, 5 steps
    python scripts/reproduce_paper.py --dry-run                         # print the commands, run nothing
    python scripts/reproduce_paper.py --table-only                      # only (re)write the table from finished runs
    python scripts/reproduce_paper.py generate.engine=vllm 'evaluate.data_files.{name}=/data/{name}_test.jsonl.gz'

Each recipe `recipes/<name>.yaml` runs as its own process (`python -m bonito_adapt run`, so GPU
memory is given back between benchmarks) with `output_dir=OUT/<name>`; finished stages are
skipped on a rerun, so the same command resumes. Extra `key=value` arguments are recipe overrides
passed to every recipe; `{name}` in them becomes the benchmark's name (point each recipe at local
files that way; relative paths in overrides are relative to the recipe file, as on the CLI).

`--limit N` adds `generate.input.max_documents=N evaluate.limit=N train.max_steps=S` (S from
`--max-steps`, default 5) and defaults OUT to runs/paper-smoke, so a smoke run never mixes with a
full one.

Outputs in OUT: `report/` (bonito_adapt's report over every run: per-template tables, generation
statistics, loss and F1 plots, results.csv) and the paper's table, one row per benchmark with
base / adapted / delta F1 next to the paper's, as `paper_table.md` and `paper_table.csv`. The
numbers come from the report's own results.csv (`bonito_adapt.report.report_runs`) and the
paper's from `bonito_adapt.report.paper.REFERENCE_F1` (the Llama-3.1-8B-bonito-v1 model card's table).
"""

from __future__ import annotations

import argparse
import csv
import io
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing, too

from bonito_adapt.benchmarks import BENCHMARK_NAMES  # noqa: E402
from bonito_adapt.errors import UserError  # noqa: E402
from bonito_adapt.report import report_runs  # noqa: E402
from bonito_adapt.report.paper import REFERENCE_F1, REFERENCE_SOURCE  # noqa: E402

BENCHMARKS = BENCHMARK_NAMES  # the paper's table order
TABLE_FIELDS = ["benchmark", "status", "target_model", "base_f1", "adapted_f1", "delta_f1",
                "paper_base_f1", "paper_adapted_f1", "paper_delta_f1", "run_dir"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="recipe overrides for every benchmark; {name} becomes the benchmark name")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="smoke run: N documents to generate from, N evaluation examples per template")
    parser.add_argument("--max-steps", type=int, metavar="S",
                        help="train.max_steps for every recipe (default with --limit: 5)")
    parser.add_argument("--out", help="root of the run directories and the table "
                                      "(default runs/paper, or runs/paper-smoke with --limit)")
    parser.add_argument("--recipes-dir", default=str(ROOT / "recipes"), help="folder holding <name>.yaml")
    parser.add_argument("--stages", help="comma-separated stages to run (default: every stage of the recipe)")
    parser.add_argument("--force", action="store_true", help="rerun stages even if up to date")
    parser.add_argument("--keep-going", action="store_true", help="run the other benchmarks when one fails")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--table-only", action="store_true", help="run nothing; write the table from OUT")
    args = parser.parse_args(argv)
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        parser.error(f"overrides must be key=value, got {' '.join(bad)}")
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in BENCHMARKS]
        if unknown:
            parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        args.benchmarks = [name for name in BENCHMARKS if name in wanted]
    else:
        args.benchmarks = list(BENCHMARKS)
    for flag in ("limit", "max_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_steps is None and args.limit is not None:
        args.max_steps = 5
    default_out = ROOT / "runs" / ("paper-smoke" if args.limit else "paper")
    args.out = Path(args.out).resolve() if args.out else default_out
    return args


def recipe_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The overrides for one benchmark: output_dir, the smoke limits, then the user's (which win)."""
    overrides = [f"output_dir={args.out / name}"]
    if args.limit is not None:
        overrides += [f"generate.input.max_documents={args.limit}", f"evaluate.limit={args.limit}"]
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return overrides + [item.replace("{name}", name) for item in args.overrides]


def command(name: str, args: argparse.Namespace) -> list[str]:
    recipe = Path(args.recipes_dir) / f"{name}.yaml"
    cmd = [sys.executable, "-m", "bonito_adapt", "run", str(recipe), *recipe_overrides(name, args)]
    if args.stages:
        cmd += ["--stages", args.stages]
    if args.force:
        cmd.append("--force")
    return cmd


def _number(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def paper_table(out: Path, benchmarks: list[str], failed: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    """Run bonito_adapt's report over OUT/<benchmark> and condense it to one row per benchmark.

    Writes OUT/report/ (the full report), OUT/paper_table.md and OUT/paper_table.csv; returns the
    markdown and the rows. A benchmark without a run directory or without results keeps its row,
    with the paper's numbers and a status saying why its own are missing.
    """
    failed = failed or {}
    out = Path(out)
    run_dirs = [out / name for name in benchmarks if (out / name).is_dir()]
    by_benchmark: dict[str, dict] = {}
    if run_dirs:
        report_dir = report_runs(run_dirs, out_dir=out / "report")
        for row in csv.DictReader(io.StringIO((report_dir / "results.csv").read_text(encoding="utf-8"))):
            # One row per (run, benchmark); keep each benchmark's row from the run that scored it.
            if row["base_f1"] or row["adapted_f1"]:
                by_benchmark.setdefault(row["benchmark"], row)
    rows, lines = [], []
    matches, differences = [], []
    for name in benchmarks:
        found = by_benchmark.get(name)
        paper_base, paper_adapted = REFERENCE_F1[name]
        base, adapted = (_number(found["base_f1"]), _number(found["adapted_f1"])) if found else (None, None)
        if name in failed:
            status = f"failed ({failed[name]})"
        elif found:
            status = "done" if base is not None and adapted is not None else "partial"
        else:
            status = "no results" if (out / name).is_dir() else "not run"
        if found:
            matches.append(found["paper_setup_matches"] == "True")
            if found["paper_setup_matches"] != "True":
                differences.append(f"{name}: {found.get('paper_setup_differences') or 'unknown'}")
        rows.append({
            "benchmark": name, "status": status, "target_model": found["target_model"] if found else "",
            "base_f1": base, "adapted_f1": adapted,
            "delta_f1": adapted - base if base is not None and adapted is not None else None,
            "paper_base_f1": paper_base, "paper_adapted_f1": paper_adapted,
            "paper_delta_f1": round(paper_adapted - paper_base, 1), "run_dir": str(out / name),
        })
    header = ["benchmark", "base F1", "adapted F1", "Δ", "paper base F1", "paper adapted F1", "paper Δ", "status"]
    lines += ["# Bonito paper table: reproduction", "",
              "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row["benchmark"], _fmt(row["base_f1"]), _fmt(row["adapted_f1"]), _fmt(row["delta_f1"], True),
                 _fmt(row["paper_base_f1"]), _fmt(row["paper_adapted_f1"]), _fmt(row["paper_delta_f1"], True),
                 row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "F1 in percent (macro-F1; token F1 for SQuADShifts), mean over each benchmark's prompt templates; "
              f"Δ = adapted − base. Paper columns: the {REFERENCE_SOURCE} table."]
    if matches and not all(matches):
        lines.append("The setup differs from the paper's in some runs, so the paper's columns are a reference point "
                     "there, not a reproduction target: " + " | ".join(differences) + ".")
    if any(r["status"] != "done" for r in rows):
        lines.append("Rows without numbers were not run, failed, or have no evaluation results yet.")
    if run_dirs:
        lines.append("Details (per template, generation statistics, training loss): [report/index.md](report/index.md)")
    markdown = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_table.md").write_text(markdown, encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    (out / "paper_table.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return markdown, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commands = {name: command(name, args) for name in args.benchmarks}
    if args.dry_run:
        for cmd in commands.values():
            print(shlex.join(cmd))
        print(f"# then the table: {args.out / 'paper_table.md'}")
        return 0
    failed: dict[str, str] = {}
    if not args.table_only:
        for name, cmd in commands.items():
            print(f"[reproduce_paper] {name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
            started = time.time()
            code = subprocess.run(cmd, cwd=ROOT).returncode
            print(f"[reproduce_paper] {name}: exit {code} after {time.time() - started:.0f} s", file=sys.stderr,
                  flush=True)
            if code != 0:
                failed[name] = f"exit {code}"
                if not args.keep_going:
                    break
    try:
        markdown, _ = paper_table(args.out, args.benchmarks, failed)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown)
    print(f"[reproduce_paper] table: {args.out / 'paper_table.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
