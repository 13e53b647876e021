"""Every problem of a recipe that can be found without running it, all at once.

`python -m bonito_adapt validate` prints each on its own line (exit 2); `run` makes the same checks
before its first stage, so a typo in the evaluate section does not surface after hours of
generation and training. Each check reuses the check its stage makes at run time, so the two
never disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .models import check_model_reference

if TYPE_CHECKING:
    from .config import Recipe

__all__ = ["RecipeProblems", "recipe_problems", "check_recipe"]

# owner/name (optionally owner/name@revision is not accepted by from_pretrained; keep it strict)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class RecipeProblems(UserError):
    """Several problems of one recipe; the CLI prints one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + " | ".join(problems))


def _model_reference(name: str | None, field: str, gguf_file: str | None = None) -> None:
    """A local folder that exists, or something shaped like a hub id."""
    if not name:
        return
    check_model_reference(name, field, gguf_file)
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if not looks_local and not _HUB_ID.match(name):
        raise UserError(f"{field}: {name!r} is neither a local folder nor a Hugging Face id (owner/name); "
                        "fix the path or the id")


def recipe_problems(recipe: Recipe, stages: list[str] | None = None) -> list[str]:
    """One line per static problem of the stages `stages` (default: every stage the recipe configures)."""
    stages = list(stages or recipe.stages())
    run_dir = Path(recipe.run_dir)
    problems: list[str] = []

    def check(function: Callable, *args) -> None:
        try:
            function(*args)
        except UserError as error:
            problems.append(str(error))

    generate, train, evaluate = recipe.generate, recipe.train, recipe.evaluate
    if generate is not None and "generate" in stages:
        check(_model_reference, generate.model, "generate.model", generate.gguf_file)
        check(_model_reference, generate.tokenizer, "generate.tokenizer")
        if generate.input.files:
            from .generate.corpus import resolve_input_files

            check(resolve_input_files, generate.input)
    if train is not None and "train" in stages:
        problems += _train_problems(recipe, stages, run_dir)
    if evaluate is not None and "evaluate" in stages:
        problems += _evaluate_problems(recipe, stages, run_dir)
    return problems


def _train_problems(recipe: Recipe, stages: list[str], run_dir: Path) -> list[str]:
    from .train.trainer import _accumulation

    train = recipe.train
    problems: list[str] = []
    for function, args in ((_model_reference, (train.model, "train.model", train.gguf_file)),
                           (_model_reference, (train.tokenizer, "train.tokenizer"))):
        try:
            function(*args)
        except UserError as error:
            problems.append(str(error))
    try:
        from .train.trainer import _check_trackers

        _check_trackers(train.report_to)
    except UserError as error:
        problems.append(str(error))
    if train.micro_batch_size != "auto":
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        try:
            _accumulation(train.effective_batch_size, train.micro_batch_size, processes)
        except UserError as error:
            problems.append(str(error))
    for index, source in enumerate(train.datasets):
        field = f"train.datasets[{index}].path"
        if source.path == "generate":
            produced = "generate" in stages or (run_dir / "generate" / "dataset").is_dir()
            if not produced:
                problems.append(
                    f"{field}: generate (this run's generated tasks), but " +
                    ("the recipe has no generate section" if recipe.generate is None else
                     "the generate stage is not among --stages and has not run") +
                    f" ({run_dir / 'generate' / 'dataset'} does not exist); run it first or point the path at a "
                    "dataset")
        elif source.path.startswith((".", "/", "~")) and not _exists_or_matches(source.path):
            problems.append(f"{field}: {source.path!r} does not exist; give a save_to_disk folder, data files "
                            "(a glob works) or a hub id")
    return problems


def _exists_or_matches(path: str) -> bool:
    import glob

    expanded = os.path.expanduser(path)
    return Path(expanded).exists() or bool(glob.glob(expanded))


def _evaluate_problems(recipe: Recipe, stages: list[str], run_dir: Path) -> list[str]:
    from .evaluate.tasks import data_file_overrides, unknown_tasks

    cfg, train = recipe.evaluate, recipe.train
    problems: list[str] = []
    try:
        problems += unknown_tasks(cfg.tasks)
    except UserError as error:  # lm-eval not installed
        problems.append(str(error))
    for task, path in cfg.data_files.items():
        if task not in cfg.tasks:
            problems.append(f"evaluate.data_files: {task!r} is not in evaluate.tasks ({', '.join(cfg.tasks)}); "
                            "add it there or remove the file")
            continue
        try:
            data_file_overrides(path, task)
        except UserError as error:
            problems.append(str(error))
    base_model = cfg.base_model or (train.model if train else None)
    if not base_model:
        problems.append("evaluate.base_model is not set and the recipe has no train section; set "
                        "evaluate.base_model to a model folder or Hugging Face id")
    else:
        gguf_file = cfg.gguf_file or (train.gguf_file if train and not cfg.base_model else None)
        try:
            _model_reference(base_model, "evaluate.base_model", gguf_file)
        except UserError as error:
            problems.append(str(error))
    if "adapted" in cfg.models:
        if cfg.adapter:
            if not (Path(cfg.adapter).expanduser() / "adapter_config.json").is_file():
                problems.append(f"evaluate.adapter: {cfg.adapter!r} holds no PEFT adapter (adapter_config.json); "
                                "give the folder the train stage wrote (RUN_DIR/train/adapter)")
        elif not (train is not None and "train" in stages) and not (run_dir / "train" / "adapter").is_dir():
            problems.append("evaluate.models includes 'adapted', but " +
                            ("the recipe has no train section" if train is None else
                             "the train stage is not among --stages and has not run") +
                            " and evaluate.adapter is not set; train first, set evaluate.adapter, or evaluate "
                            "models: [base]")
    for name, wrapper in cfg.prompt_format.items():
        if wrapper != "auto" and name not in cfg.models:
            problems.append(f"evaluate.prompt_format.{name}: {name} is not in evaluate.models "
                            f"({', '.join(cfg.models)}); remove it or add the model")
    return problems


def check_recipe(recipe: Recipe, stages: list[str] | None = None) -> None:
    """Raise RecipeProblems with every static problem, if there is any."""
    problems = recipe_problems(recipe, stages)
    if problems:
        raise RecipeProblems(problems)
