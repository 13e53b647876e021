"""`python -m bonito_adapt export RUN_DIR`: the generated tasks as files to share, or on the Hugging Face Hub.

The tasks are the generate stage's `dataset/` (fields `input`, `output`, `task_type`, `context`,
`source_id`). Files are written with `datasets`' own writers (`to_json` lines, `to_parquet`); the Hub
upload is `datasets.Dataset.push_to_hub`, private unless `--public`, with the token from the
environment (`HF_TOKEN`) or the user's login, as `huggingface_hub` resolves it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..rundir import atomic_output

__all__ = ["export_tasks"]

FORMATS = {"jsonl": "tasks.jsonl", "parquet": "tasks.parquet"}


def export_tasks(run_dir: str | Path, out: str | Path | None = None, formats: tuple[str, ...] = ("jsonl", "parquet"),
                 push_to_hub: str | None = None, private: bool = True) -> dict[str, str]:
    """Write the run's tasks in `formats` into `out` (default RUN_DIR/export) and/or push them; return what
    was written where."""
    import datasets

    dataset_dir = Path(run_dir) / "generate" / "dataset"
    if not dataset_dir.is_dir():
        raise UserError(f"export: {str(dataset_dir)!r} does not exist; run the generate stage of this run first")
    tasks = datasets.load_from_disk(str(dataset_dir))
    written: dict[str, str] = {}
    folder = Path(out) if out else Path(run_dir) / "export"
    for name in formats:
        if name not in FORMATS:
            raise UserError(f"export: unknown format {name!r}; choose from {', '.join(FORMATS)}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FORMATS[name]
        with atomic_output(path) as tmp:
            if name == "jsonl":
                tasks.to_json(str(tmp), lines=True, force_ascii=False)
            else:
                tasks.to_parquet(str(tmp))
        written[name] = str(path)
    if push_to_hub:
        tasks.push_to_hub(push_to_hub, private=private, split="train",
                          commit_message=f"bonito_adapt: {len(tasks)} generated tasks")
        written["hub"] = push_to_hub
    return written
