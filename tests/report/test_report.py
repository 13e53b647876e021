"""The report: tables, CSV and plots computed from (fabricated) run artifacts, robust to missing pieces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bonito_adapt.cli import main
from bonito_adapt.config import Recipe
from bonito_adapt.errors import UserError
from bonito_adapt.report import report_runs, run
from bonito_adapt.report.config import ReportConfig


def template_results(values: dict[str, tuple[float, float]]) -> dict:
    templates = {name: {"acc": acc, "f1": f1} for name, (acc, f1) in values.items()}
    n = len(templates)
    return {"templates": templates, "examples": 50,
            "average": {"acc": sum(v["acc"] for v in templates.values()) / n,
                        "f1": sum(v["f1"] for v in templates.values()) / n}}


def make_run(root: Path, name: str, model: str, *, base_f1: float, adapted_f1: float, with_train=True,
             with_generate=True) -> Path:
    run_dir = root / name
    (run_dir / "evaluate").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(f"name: {name}\noutput_dir: {run_dir}\ntrain: {{model: {model}}}\n")
    results = {
        "models": {
            "base": {"pubmed_qa": template_results({"pubmed_qa_a": (0.5, base_f1 - 0.1), "pubmed_qa_b": (0.7, base_f1 + 0.1)}),
                     "squadshifts_amazon": {"templates": {"squadshifts_amazon": {"exact_match": 0.2, "f1": 0.3}},
                                            "average": {"exact_match": 0.2, "f1": 0.3}, "examples": 50}},
            "adapted": {"pubmed_qa": template_results({"pubmed_qa_a": (0.6, adapted_f1), "pubmed_qa_b": (0.8, adapted_f1)})},
        },
        "config": {"base_model": model},
    }
    (run_dir / "evaluate" / "results.json").write_text(json.dumps(results))
    if with_train:
        (run_dir / "train").mkdir()
        history = [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0} for s in range(1, 11)]
        history.append({"step": 10, "train_loss": 0.9, "train_runtime": 12.0})
        (run_dir / "train" / "log_history.json").write_text(json.dumps(history))
    if with_generate:
        (run_dir / "generate").mkdir()
        stats = {"documents": 12, "passages": 30, "generations": 30, "parsed": 27, "parse_rate": 0.9,
                 "tasks": 27, "tokens/s": 1234.5, "by_task_type": {"nli": 27}}
        (run_dir / "generate" / "stats.json").write_text(json.dumps(stats))
    return run_dir


def test_single_run_table_csv_and_plots(tmp_path):
    run_dir = make_run(tmp_path, "pubmed", "mistralai/Mistral-7B-v0.1", base_f1=0.3, adapted_f1=0.45)
    out = report_runs([run_dir])
    assert out == run_dir / "report"
    index = (out / "index.md").read_text()
    # F1 row: base mean(0.2, 0.4) = 30.0, adapted 45.0, delta +15.0, paper 25.6 -> 44.5 (same target model)
    assert "| pubmed_qa | 30.0 | 45.0 | +15.0 | 25.6 | 44.5 |" in index
    assert "| squadshifts_amazon | 30.0 | – | – | 17.5 | 72.9 |" in index
    assert "reference only" not in index
    assert "| pubmed_qa | accuracy | 60.0 | 70.0 | +10.0 |" in index
    assert "| squadshifts_amazon | exact match | 20.0 | – | – |" in index
    assert "| parse_rate | 0.9 |" in index and "| by_task_type.nli | 27 |" in index
    assert "| pubmed | 10 | 2.0000 | 0.2000 | 0.9000 |" in index
    for link in ("results.csv", "metrics.png", "loss.png"):
        assert f"]({link})" in index and (out / link).is_file()

    rows = list(csv.DictReader((out / "results.csv").open()))
    pubmed = next(r for r in rows if r["benchmark"] == "pubmed_qa")
    assert float(pubmed["base_f1"]) == pytest.approx(30.0) and float(pubmed["delta_f1"]) == pytest.approx(15.0)
    assert pubmed["paper_setup_matches"] == "True" and float(pubmed["paper_adapted_f1"]) == 44.5

    from PIL import Image

    for png in ("metrics.png", "loss.png"):
        with Image.open(out / png) as image:
            assert image.size[0] >= 600 and image.size[1] >= 400


def test_runs_side_by_side_and_paper_numbers_as_reference(tmp_path):
    first = make_run(tmp_path, "small", "/models/SmolLM2-135M-Instruct", base_f1=0.2, adapted_f1=0.3)
    second = make_run(tmp_path, "bigger", "/models/SmolLM2-135M-Instruct", base_f1=0.25, adapted_f1=0.5,
                      with_train=False, with_generate=False)
    out = report_runs([first, second], out_dir=tmp_path / "cmp")
    index = (out / "index.md").read_text()
    assert ("| benchmark | small: base | small: adapted | small: Δ | bigger: base | bigger: adapted | bigger: Δ | "
            "paper, reference only: base | paper, reference only: adapted |") in index
    assert "| pubmed_qa | 20.0 | 30.0 | +10.0 | 25.0 | 50.0 | +25.0 | 25.6 | 44.5 |" in index
    assert "not Mistral-7B-v0.1" in index
    assert "| parse_rate | 0.9 | – |" in index
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["run"] for r in rows} == {"small", "bigger"}
    assert all(r["paper_setup_matches"] == "False" for r in rows)

    without_paper = report_runs([first], out_dir=tmp_path / "nopaper", paper_numbers=False, plots=False)
    text = (without_paper / "index.md").read_text()
    results_section = text.split("## Results")[1].split("## Generated tasks")[0]
    assert "| pubmed_qa | 20.0 | 30.0 | +10.0 |" in results_section and "paper" not in results_section.lower()
    assert not list(without_paper.glob("*.png"))


def test_empty_run_directory_still_gives_a_report(tmp_path):
    (tmp_path / "empty").mkdir()
    out = report_runs([tmp_path / "empty"])
    index = (out / "index.md").read_text()
    assert "No evaluation results yet" in index and "No training log" in index
    assert "No generation statistics" in index
    with pytest.raises(UserError, match="does not exist"):
        report_runs([tmp_path / "nope"])


def test_cli_report_and_stage(tmp_path, capsys):
    run_dir = make_run(tmp_path, "pubmed", "mistralai/Mistral-7B-v0.1", base_f1=0.3, adapted_f1=0.45)
    other = make_run(tmp_path, "other", "mistralai/Mistral-7B-v0.1", base_f1=0.3, adapted_f1=0.4)
    assert main(["report", str(run_dir), str(other), "--out", str(tmp_path / "out")]) == 0
    assert "| pubmed_qa | 30.0 | 45.0 | +15.0 | 30.0 | 40.0 | +10.0 | 25.6 | 44.5 |" in (tmp_path / "out" / "index.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err

    recipe = Recipe(name="pubmed", output_dir=str(run_dir), report=ReportConfig(compare_runs=[str(other)], plots=False))
    out = run(recipe, run_dir)
    assert (out / "manifest.json").is_file() and "other" in (out / "index.md").read_text()
    assert run(recipe, run_dir) == out  # up to date: skipped
