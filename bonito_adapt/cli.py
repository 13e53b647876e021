"""`python -m bonito_adapt run|generate|validate|tasks|export|report` — every user error is one line, exit 2.

Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: writes in progress are abandoned (files are only
ever replaced by rename), a one-line message says to rerun, and the exit code is 128 + the signal
number (130, 143). A second SIGTERM kills at once. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from contextlib import contextmanager

from .errors import UserError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bonito_adapt",
        description="Adapt a language model to your own unannotated text: generate -> train -> evaluate -> report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def recipe_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("recipe", help="recipe YAML file (see recipes/)")
        command.add_argument("overrides", nargs="*", metavar="key.sub=value",
                             help="override recipe fields, e.g. train.max_steps=5")
        return command

    run = recipe_command("run", "run a recipe's stages (skipping those already up to date)")
    run.add_argument("--stages", help="comma-separated subset, e.g. generate,train")
    run.add_argument("--force", action="store_true", help="rerun the stages even if up to date")
    generate = recipe_command("generate", "run only the generate stage of a recipe")
    generate.add_argument("--force", action="store_true", help="rerun even if up to date")
    recipe_command("validate", "check a recipe without running anything")
    sub.add_parser("tasks", help="list Bonito task types")
    export = sub.add_parser("export", help="write a run's generated tasks as .jsonl/.parquet, or push them to the Hub")
    export.add_argument("run_dir", help="a run directory whose generate stage has run")
    export.add_argument("--out", help="folder for the files (default: RUN_DIR/export)")
    export.add_argument("--format", action="append", choices=["jsonl", "parquet"],
                        help="file format, repeatable (default: both); with --push-to-hub alone, none")
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to this Hugging Face dataset repo")
    export.add_argument("--public", action="store_true", help="make the Hub dataset public (default: private)")
    report = sub.add_parser("report", help="write a report (tables, plots) for one or more run directories")
    report.add_argument("run_dirs", nargs="+", help="run directories (output_dir of a recipe)")
    report.add_argument("--out", help="report folder (default: RUN_DIR/report of the first run)")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    if args.command == "tasks":
        from .generate.task_format import TASK_TYPES

        for short, full in TASK_TYPES.items():
            print(f"{short:<14} {full}")
        return 0
    if args.command == "export":
        from .generate.export import export_tasks

        formats = tuple(args.format or (() if args.push_to_hub else ("jsonl", "parquet")))
        for kind, where in export_tasks(args.run_dir, args.out, formats, args.push_to_hub, not args.public).items():
            console.print(f"export {kind}: {where}")
        return 0
    if args.command == "report":
        from .report import report_runs

        out = report_runs(args.run_dirs, out_dir=args.out)
        console.print(f"report written to {out / 'index.md'}")
        return 0

    from .config import load_recipe
    from .pipeline import run_stages, select_stages

    recipe = load_recipe(args.recipe, args.overrides)
    if args.command == "validate":
        from .checks import check_recipe

        check_recipe(recipe)
        console.print(f"recipe {args.recipe} is valid: stages {', '.join(recipe.stages()) or 'none'}; "
                      f"output_dir {recipe.output_dir}")
        return 0
    stages = select_stages(recipe, "generate" if args.command == "generate" else args.stages)
    artifacts = run_stages(recipe, stages, force=args.force)
    for stage, path in artifacts.items():
        console.print(f"[bold]{stage}[/bold]: {path}")
    return 0


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread by the SIGTERM handler, so the run unwinds like on Ctrl-C."""


@contextmanager
def _sigterm_unwinds():
    """While running, SIGTERM raises _Terminated (once; a second SIGTERM gets the default: die at once)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).strip()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may also follow options (`run r.yaml --stages train train.max_steps=5`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        with _sigterm_unwinds():
            return _dispatch(args)
    except UserError as error:
        for problem in getattr(error, "problems", None) or [str(error)]:  # a recipe's problems: one line each
            print(f"error: {_one_line(problem)}", file=sys.stderr)
        return 2
    except OSError as error:
        # A full disk or quota outside our own writes (datasets, checkpoints): the machine's problem, one line.
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {error.filename!r}" if error.filename else ""
        print(f"error: {error.strerror or 'no space left on device'}{where}; free some disk space, then rerun "
              "the same command to resume (finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        signum = signal.SIGTERM if isinstance(interrupt, _Terminated) else signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}); rerun the same command to resume "
              "(finished shards, checkpoints and evaluations are kept)", file=sys.stderr)
        return 128 + signum
