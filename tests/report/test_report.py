"""The report: tables, CSV and plots computed from (fabricated) run artifacts, robust to missing pieces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bonito_adapt.cli import main
from bonito_adapt.config import Recipe, load_recipe
from bonito_adapt.errors import UserError
from bonito_adapt.report import report_runs, run
from bonito_adapt.report.config import ReportConfig
from bonito_adapt.report.paper import PAPER_TRAINING, setup_differences

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def template_results(values: dict[str, tuple[float, float]]) -> dict:
    templates = {name: {"acc": acc, "f1": f1} for name, (acc, f1) in values.items()}
    n = len(templates)
    return {"templates": templates, "examples": 50,
            "average": {"acc": sum(v["acc"] for v in templates.values()) / n,
                        "f1": sum(v["f1"] for v in templates.values()) / n}}


PAPER_SCORING = {"base": {"protocol": "paper", "prompt_format": "instruct"},
                 "adapted": {"protocol": "paper", "prompt_format": "bonito"}}


def paper_train_config(**changes) -> dict:
    """The train section of the shipped paper recipe, as the train stage's manifest records it."""
    config = load_recipe(RECIPES / "pubmed_qa.yaml").train.model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = config
        for part in parents:
            target = target[part]
        target[last] = value
    return config


def make_run(root: Path, name: str, model: str, *, base_f1: float, adapted_f1: float, with_train=True,
             with_generate=True, scoring=PAPER_SCORING, train_config=None) -> Path:
    """A fabricated run directory; by default scored and trained as the paper recipe does."""
    run_dir = root / name
    (run_dir / "evaluate").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(f"name: {name}\noutput_dir: {run_dir}\ntrain: {{model: {model}}}\n")
    squad = {"templates": {"squadshifts_amazon": {"exact_match": 0.2, "f1": 0.3}},
             "average": {"exact_match": 0.2, "f1": 0.3}, "examples": 50, "squad_gold": "first"}
    results = {
        "models": {
            "base": {"pubmed_qa": template_results({"pubmed_qa_a": (0.5, base_f1 - 0.1), "pubmed_qa_b": (0.7, base_f1 + 0.1)}),
                     "squadshifts_amazon": squad},
            "adapted": {"pubmed_qa": template_results({"pubmed_qa_a": (0.6, adapted_f1), "pubmed_qa_b": (0.8, adapted_f1)})},
        },
        "config": {"base_model": model},
    }
    for model_name, tasks in results["models"].items():
        for summary in tasks.values():
            summary.update(scoring[model_name])
    (run_dir / "evaluate" / "results.json").write_text(json.dumps(results))
    if with_train:
        (run_dir / "train").mkdir()
        history = [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0} for s in range(1, 11)]
        history.append({"step": 10, "train_loss": 0.9, "train_runtime": 12.0})
        (run_dir / "train" / "log_history.json").write_text(json.dumps(history))
        config = train_config if train_config is not None else paper_train_config(model=model)
        (run_dir / "train" / "manifest.json").write_text(json.dumps({"stage": "train", "fingerprint": f"fake-{name}", "config": config}))
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
    assert "reference only" not in index and "| model card: base | model card: adapted |" in index
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
            "model card, reference only: base | model card, reference only: adapted |") in index
    assert "| pubmed_qa | 20.0 | 30.0 | +10.0 | 25.0 | 50.0 | +25.0 | 25.6 | 44.5 |" in index
    assert "small / pubmed_qa: target /models/SmolLM2-135M-Instruct (paper: Mistral-7B-v0.1)" in index
    assert "| parse_rate | 0.9 | – |" in index
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["run"] for r in rows} == {"small", "bigger"}
    assert all(r["paper_setup_matches"] == "False" for r in rows)

    without_paper = report_runs([first], out_dir=tmp_path / "nopaper", paper_numbers=False, plots=False)
    text = (without_paper / "index.md").read_text()
    results_section = text.split("## Results")[1].split("## Generated tasks")[0]
    assert "| pubmed_qa | 20.0 | 30.0 | +10.0 |" in results_section and "paper" not in results_section.lower()
    assert not list(without_paper.glob("*.png"))


def test_setup_matches_the_paper_only_with_its_target_templates_wrappers_and_training(tmp_path):
    def differences(name, model="mistralai/Mistral-7B-v0.1", **kwargs):
        run_dir = make_run(tmp_path, name, model, base_f1=0.3, adapted_f1=0.45, with_generate=False, **kwargs)
        from bonito_adapt.report.runs import load_run

        return setup_differences(load_run(run_dir), "pubmed_qa")

    assert differences("paper") == []
    assert differences("smol", model="/models/SmolLM2-135M") == [
        "target /models/SmolLM2-135M (paper: Mistral-7B-v0.1)"]
    lm_eval = {"base": {"protocol": "lm_eval", "prompt_format": "plain"},
               "adapted": {"protocol": "lm_eval", "prompt_format": "bonito"}}
    assert differences("lm_eval", scoring=lm_eval) == ["base scored with protocol lm_eval",
                                                       "adapted scored with protocol lm_eval"]
    chat = {**PAPER_SCORING, "base": {"protocol": "paper", "prompt_format": "chat"}}
    assert differences("chat", scoring=chat) == ["base wrapper chat (paper: instruct)"]
    card = paper_train_config(model="mistralai/Mistral-7B-v0.1", **{"lora.alpha": 4.0})
    assert differences("card_alpha", train_config=card) == ["train.lora.alpha 4.0 (paper: 16.0)"]
    assert differences("untrained", with_train=False) == ["no train manifest"]
    # the shipped paper recipes train as the paper's code does, key by key
    for recipe in sorted(RECIPES.glob("*.yaml")):
        train = load_recipe(recipe).train
        if recipe.stem != "quickstart" and train is not None:
            config = train.model_dump(mode="json")
            for key, expected in PAPER_TRAINING.items():
                value = config
                for part in key.split("."):
                    value = value[part]
                assert value == expected, (recipe.name, key)


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


def test_generated_tasks_page_shows_a_sample_answers_failures_lengths_and_drops(tmp_path):
    run_dir = make_run(tmp_path, "inspect", "mistralai/Mistral-7B-v0.1", base_f1=0.3, adapted_f1=0.4)
    generate_dir = run_dir / "generate"
    tasks = [{"input": f"Passage {i}. Is item {i} returned?", "output": "No" if i % 4 else "Yes.", "task_type": "ynqa",
              "context": f"Passage {i} about returns.", "source_id": f"doc{i % 3}.md"} for i in range(20)]
    (generate_dir / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (generate_dir / "shards").mkdir()
    rows = [{"passage_index": i, "generation": f"{t['input']}<|pipe|>{t['output']}", "parsed": True}
            for i, t in enumerate(tasks)]
    rows += [{"passage_index": 20, "generation": "Is it returned? yes", "parsed": False},
             {"passage_index": 21, "generation": "a<|pipe|>b<|pipe|>c", "parsed": False}]
    (generate_dir / "shards" / "shard-00000000-00000022.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (generate_dir / "dropped.jsonl").write_text(json.dumps({**tasks[1], "dropped_by": "balance_labels"}) + "\n")

    out = report_runs([run_dir])
    index = (out / "index.md").read_text()
    assert "[generated_tasks.md](generated_tasks.md)" in index
    page = (out / "generated_tasks.md").read_text()
    assert "## A random sample (10 of 20, seed 0)" in page
    assert "| no | 15 | 75.0% |" in page and "| yes | 5 | 25.0% |" in page  # "Yes." and "Yes" are one answer
    assert "**Skewed:** 75% of the tasks answer 'no'" in page and "balance_labels" in page
    assert "## Failed generations (2 of 22)" in page
    # table cells escape the pipes of <|pipe|>, so the tables stay tables
    assert "no <\\|pipe\\|> separator" in page and "| 2 <\\|pipe\\|> separators (one expected) | 1 |" in page
    assert "| balance_labels | 1 |" in page and "3 documents gave tasks" in page
    assert (out / "generated_tasks_lengths.png").is_file() and "![lengths](generated_tasks_lengths.png)" in page
    assert report_runs([run_dir]) == out and (out / "generated_tasks.md").read_text() == page  # seeded: same sample
