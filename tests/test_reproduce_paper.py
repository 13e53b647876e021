"""scripts/reproduce_paper.py: the commands it runs, the paper table it writes, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from bonito_adapt.config import load_recipe
from bonito_adapt.report.paper import PAPER_WRAPPERS, REFERENCE_F1

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ["pubmed_qa", "privacy_qa", "squadshifts_nyt", "squadshifts_amazon", "squadshifts_reddit",
              "contract_nli", "vitaminc"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_paper", ROOT / "scripts" / "reproduce_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_run(script, capsys, *argv) -> list[list[str]]:
    assert script.main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("# then the table:")
    return [shlex.split(line) for line in lines[:-1]]


def overrides_of(cmd: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in cmd if "=" in item and not item.startswith("-"))


def test_dry_run_lists_the_seven_recipes_in_the_paper_order(script, capsys, tmp_path):
    commands = dry_run(script, capsys, "--out", str(tmp_path))
    assert [Path(cmd[4]).name for cmd in commands] == [f"{name}.yaml" for name in BENCHMARKS]
    for name, cmd in zip(BENCHMARKS, commands, strict=True):
        assert cmd[:4] == [sys.executable, "-m", "bonito_adapt", "run"] and Path(cmd[4]).is_file()
        assert overrides_of(cmd) == {"output_dir": str(tmp_path / name)}
    assert list(REFERENCE_F1) == BENCHMARKS


def test_limit_subset_placeholders_stages_and_force(script, capsys, tmp_path):
    commands = dry_run(script, capsys, "--only", "contract_nli,pubmed_qa", "--limit", "7", "--stages",
                       "generate,train", "--force", "generate.engine=transformers",
                       "evaluate.data_files.{name}=/data/{name}_test.jsonl.gz")
    assert [Path(cmd[4]).stem for cmd in commands] == ["pubmed_qa", "contract_nli"]  # paper order, not --only's
    for name, cmd in zip(["pubmed_qa", "contract_nli"], commands, strict=True):
        assert overrides_of(cmd) == {
            "output_dir": str(ROOT / "runs" / "paper-smoke" / name),  # a smoke run never mixes with a full one
            "generate.input.max_documents": "7", "evaluate.limit": "7", "train.max_steps": "5",
            "generate.engine": "transformers", f"evaluate.data_files.{name}": f"/data/{name}_test.jsonl.gz",
        }
        assert cmd[-3:] == ["--stages", "generate,train", "--force"]
    # every override is one the recipe schema accepts
    from bonito_adapt.config import load_recipe

    recipe = load_recipe(commands[1][4], commands[1][5:-3])
    assert recipe.generate.input.max_documents == 7 and recipe.evaluate.limit == 7 and recipe.train.max_steps == 5


def test_bad_arguments_exit_2(script, capsys):
    for argv in (["--only", "pubmed"], ["--limit", "0"], ["train.max_steps"]):
        with pytest.raises(SystemExit) as caught:
            script.main([*argv, "--dry-run"])
        assert caught.value.code == 2
    assert "unknown benchmark(s) pubmed" in capsys.readouterr().err


def fake_run(out: Path, name: str, base_f1: float | None, adapted_f1: float | None,
             model: str = "mistralai/Mistral-7B-v0.1") -> Path:
    """A run directory with recipe.yaml and evaluate/results.json in the layout the stages write."""
    run_dir = out / name
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "output_dir": str(run_dir),
                                                         "train": {"model": model}}))
    models = {}
    for model_name, f1 in (("base", base_f1), ("adapted", adapted_f1)):
        if f1 is None:
            continue
        templates = {f"{name}_t{i}": {"acc": f1 + 0.1, "f1": f1 + d} for i, d in enumerate((-0.02, 0.0, 0.02))}
        models[model_name] = {name: {"templates": templates, "average": {"acc": f1 + 0.1, "f1": f1}, "examples": 50,
                                     "protocol": "paper", "prompt_format": PAPER_WRAPPERS[model_name]}}
    results = {"models": models, "config": {"models": [{"name": m, "model": model} for m in models]},
               "scale": "metrics are fractions in [0, 1]"}
    (run_dir / "evaluate").mkdir()
    (run_dir / "evaluate" / "results.json").write_text(json.dumps(results))
    # trained as the shipped paper recipe trains (what its train manifest records)
    train = load_recipe(ROOT / "recipes" / f"{name}.yaml").train.model_dump(mode="json")
    (run_dir / "train").mkdir()
    (run_dir / "train" / "manifest.json").write_text(json.dumps({"stage": "train", "fingerprint": name,
                                                                 "config": {**train, "model": model}}))
    return run_dir


def test_table_from_fake_runs(script, tmp_path):
    fake_run(tmp_path, "pubmed_qa", 0.25, 0.45)
    fake_run(tmp_path, "contract_nli", 0.30, 0.70)
    fake_run(tmp_path, "vitaminc", 0.40, None)  # adapted not evaluated yet
    (tmp_path / "privacy_qa").mkdir()  # started, nothing finished
    markdown, rows = script.paper_table(tmp_path, BENCHMARKS, failed={"squadshifts_nyt": "exit 2"})

    by_name = {row["benchmark"]: row for row in rows}
    assert [row["benchmark"] for row in rows] == BENCHMARKS
    assert by_name["pubmed_qa"]["base_f1"] == pytest.approx(25.0)
    assert by_name["pubmed_qa"]["adapted_f1"] == pytest.approx(45.0)
    assert by_name["pubmed_qa"]["delta_f1"] == pytest.approx(20.0)
    assert (by_name["contract_nli"]["paper_base_f1"], by_name["contract_nli"]["paper_adapted_f1"]) == (31.2, 69.7)
    assert {name: row["status"] for name, row in by_name.items()} == {
        "pubmed_qa": "done", "privacy_qa": "no results", "squadshifts_nyt": "failed (exit 2)",
        "squadshifts_amazon": "not run", "squadshifts_reddit": "not run", "contract_nli": "done", "vitaminc": "partial",
    }
    assert by_name["vitaminc"]["delta_f1"] is None and by_name["squadshifts_amazon"]["paper_delta_f1"] == 55.4

    assert "| pubmed_qa | 25.0 | 45.0 | +20.0 | 25.6 | 44.5 | +18.9 | done |" in markdown
    assert "| contract_nli | 30.0 | 70.0 | +40.0 | 31.2 | 69.7 | +38.5 | done |" in markdown
    assert "| squadshifts_amazon | – | – | – | 17.5 | 72.9 | +55.4 | not run |" in markdown
    assert "reference point" not in markdown  # every run is set up as the paper's: target, protocol, training
    assert (tmp_path / "paper_table.md").read_text() == markdown
    with open(tmp_path / "paper_table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["benchmark"] for r in table] == BENCHMARKS and float(table[5]["delta_f1"]) == pytest.approx(40.0)
    # the full report of bonito_adapt over the same runs sits beside it
    assert (tmp_path / "report" / "index.md").is_file() and (tmp_path / "report" / "results.csv").is_file()


def test_table_notes_another_target_model(script, tmp_path):
    fake_run(tmp_path, "pubmed_qa", 0.30, 0.35, model="models/SmolLM2-135M-Instruct")
    markdown, _ = script.paper_table(tmp_path, ["pubmed_qa"])
    assert "SmolLM2-135M-Instruct" in markdown and "reference point" in markdown


def test_table_only_with_no_runs_still_writes_the_paper_columns(script, tmp_path, capsys):
    assert script.main(["--table-only", "--only", "vitaminc", "--out", str(tmp_path)]) == 0
    assert "| vitaminc | – | – | – | 38.9 | 73.3 | +34.4 | not run |" in (tmp_path / "paper_table.md").read_text()


def test_tiny_model_smoke_run_end_to_end(script, tmp_path, tiny_model_dir, monkeypatch):
    """The script really runs a paper recipe (train, evaluate, report on local files) and fills the table."""
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"input": f"The party shall not disclose item {i}.\nDoes it disclose?",
                                         "output": ["yes", "no"][i % 2]}) + "\n" for i in range(8)))
    test_file = tmp_path / "contract_nli_test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in [
        {"premise": "The Recipient shall return all materials.", "hypothesis": "Recipient shall return materials.",
         "label": 1},
        {"premise": "The Recipient may disclose to employees.", "hypothesis": "Recipient may not share with "
         "employees.", "label": 0},
        {"premise": "This agreement is governed by Ohio law.", "hypothesis": "Recipient may create derivative works.",
         "label": 2},
    ]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: one thread is faster for a tiny model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    code = script.main([
        "--only", "contract_nli", "--limit", "3", "--max-steps", "2", "--out", str(out),
        "--stages", "train,evaluate,report",
        f"train.model={tiny_model_dir}", "train.quantization=none", "train.optimizer=adamw_torch",
        "train.effective_batch_size=4", "train.max_length=64", "train.lora.r=4",
        f"train.datasets=[{{path: {tasks}}}]", f"evaluate.data_files.{{name}}={test_file}",
    ])
    assert code == 0
    results = json.loads((out / "contract_nli" / "evaluate" / "results.json").read_text())
    assert set(results["models"]) == {"base", "adapted"}
    assert results["models"]["adapted"]["contract_nli"]["examples"] == 3
    row = next(r for r in csv.DictReader(open(out / "paper_table.csv")) if r["benchmark"] == "contract_nli")
    assert row["status"] == "done" and row["base_f1"] and row["adapted_f1"]
    assert "reference point" in (out / "paper_table.md").read_text()  # a tiny Llama is not Mistral-7B
