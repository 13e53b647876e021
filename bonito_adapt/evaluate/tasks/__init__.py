"""The shipped lm-eval tasks (the YAML files beside this module, `utils.py` for their functions) and
how the evaluate stage finds them: a TaskManager over this folder (plus lm-eval's own tasks when a
name needs them), and tasks re-pointed at local data files (`evaluate.data_files`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ...benchmarks import BENCHMARK_NAMES
from ...errors import UserError, missing_extra
from ...file_formats import TABLE_FORMATS, data_load_errors, table_builder

__all__ = ["unknown_tasks", "TASKS_DIR", "task_manager", "data_file_overrides", "load_task_objects"]

TASKS_DIR = Path(__file__).resolve().parent


def _task_managers():
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise missing_extra("lm-eval", "eval") from None
    return TaskManager


def task_manager(task_names: list[str]):
    """A TaskManager that knows the shipped tasks, plus lm-eval's own when a name needs them.

    Indexing lm-eval's ~15k built-in tasks takes seconds, so it happens only when a requested
    name is not one of ours. Unknown names are one UserError line with close matches.
    """
    manager, unknown = _manager_and_unknown(task_names)
    if unknown:
        raise UserError(" | ".join(unknown))
    return manager


def unknown_tasks(task_names: list[str]) -> list[str]:
    """One problem line per name that is neither a shipped task nor one of lm-eval's."""
    return _manager_and_unknown(task_names)[1]


def _manager_and_unknown(task_names: list[str]):
    TaskManager = _task_managers()
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    if all(name in manager.all_tasks for name in task_names):
        return manager, []
    manager = TaskManager(include_path=str(TASKS_DIR))
    unknown = []
    for name in task_names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "`lm_eval ls tasks` lists them"
            unknown.append(f"evaluate.tasks: unknown task {name!r}; shipped: {', '.join(BENCHMARK_NAMES)}, "
                           f"quickstart_qa, or any lm-eval task ({hint})")
    return manager, unknown


def data_file_overrides(path: str, task: str) -> dict[str, Any]:
    """The task settings that make task `task` read the local file `path` (its split named `test`)."""
    file = Path(path)
    builder = table_builder(file)
    if builder is None:
        raise UserError(f"evaluate.data_files.{task}: {path!r} is not a {TABLE_FORMATS} file; "
                        "convert it to one of those")
    if not file.is_file():
        raise UserError(f"evaluate.data_files.{task}: file {path!r} does not exist; fix the path")
    # All splits of a local file are called `test`, whatever the public dataset's split was.
    return {"dataset_path": builder, "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(file)}}, "test_split": "test"}


def load_task_objects(manager, name: str, data_file: str | None = None, overrides: dict[str, Any] | None = None):
    """The lm-eval Task or Group `name`; with `data_file`, every task in it reads that local file instead, and
    `overrides` (task settings) replace those of every task in it."""
    settings = {**(data_file_overrides(data_file, name) if data_file else {}), **(overrides or {})}
    try:
        if not settings:
            loaded = manager.load([name])
            return loaded["groups"].get(name) or loaded["tasks"][name]
        return _load_with_settings(manager, name, settings)
    except data_load_errors() as error:  # missing, unreachable or malformed data; anything else is a bug
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"evaluate: could not load the data of task {name!r} ({type(error).__name__}: {detail}); "
                        f"set evaluate.data_files.{name} to a local .jsonl(.gz)/.parquet file in the "
                        "public dataset's field names, or check network access") from None


def _load_with_settings(manager, name: str, settings: dict[str, Any]):
    from lm_eval.api.group import Group
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    def build(entry_name: str):
        entry = manager.task_index[entry_name]
        if entry.yaml_path is None:
            raise UserError(f"evaluate.data_files.{name}: {entry_name!r} is not defined by a YAML file; "
                            "local data files work only for YAML tasks")
        config = load_yaml(entry.yaml_path, resolve_func=True)
        if entry.kind is not Kind.GROUP:
            return manager.load([{**config, **settings}])["tasks"][entry_name]
        group = Group.from_config({key: config[key] for key in ("group", "task", "aggregate_metric_list", "metadata")
                                   if key in config})
        for child in config["task"]:
            group.add(build(child if isinstance(child, str) else child["task"]))
        return group

    return build(name)
