"""`python -m bonito_adapt export`: the generated tasks as .jsonl / .parquet files and on the Hub (no network:
the Hub call is captured and its arguments checked)."""

from __future__ import annotations

import json

import pytest

from bonito_adapt.cli import main

TASKS = [{"input": f"Does clause {i} allow sharing?", "output": "No" if i % 2 else "Yes", "task_type": "ynqa",
          "context": f"Clause {i}: no sharing — “quoted”.", "source_id": f"nda.md:{i}"} for i in range(5)]


@pytest.fixture
def run_dir(tmp_path):
    import datasets

    run = tmp_path / "run"
    datasets.Dataset.from_list(TASKS).save_to_disk(str(run / "generate" / "dataset"))
    return run


def test_export_writes_jsonl_and_parquet_with_every_task(run_dir, capsys):
    import datasets

    assert main(["export", str(run_dir)]) == 0
    lines = (run_dir / "export" / "tasks.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == TASKS and "“quoted”" in lines[0]  # UTF-8, not escaped
    table = datasets.load_dataset("parquet", data_files=str(run_dir / "export" / "tasks.parquet"), split="train")
    assert table.to_list() == TASKS
    assert (run_dir / "export" / "tasks.parquet").stat().st_mode & 0o077 == (0o644 & 0o077)
    assert "export parquet" in capsys.readouterr().err


def test_push_to_hub_uses_datasets_own_call_private_by_default(run_dir, monkeypatch, tmp_path):
    import datasets

    calls = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo_id, **kwargs: calls.append((self.to_list(), repo_id, kwargs)))
    assert main(["export", str(run_dir), "--push-to-hub", "me/nda-tasks"]) == 0
    assert calls == [(TASKS, "me/nda-tasks", {"private": True, "split": "train",
                                               "commit_message": "bonito_adapt: 5 generated tasks"})]
    assert not (run_dir / "export").exists()  # only the upload was asked for
    assert main(["export", str(run_dir), "--push-to-hub", "me/public", "--public", "--format", "jsonl",
                 "--out", str(tmp_path / "files")]) == 0
    assert calls[-1][2]["private"] is False and (tmp_path / "files" / "tasks.jsonl").is_file()


def test_export_of_a_run_without_tasks_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run the generate stage of this run first" in err and err.count("\n") == 1
