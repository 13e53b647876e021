"""The quickstart: its recipe, its hand-written evaluation set (quickstart_qa) and a tiny-model run of its stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bonito_adapt.config import load_recipe

pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "quickstart.yaml"
CORPUS = ROOT / "recipes" / "data" / "quickstart_corpus"
QUESTIONS = ROOT / "recipes" / "data" / "quickstart_qa.jsonl"
TEMPLATES = ["quickstart_qa_gpt3_style", "quickstart_qa_based_on_passage", "quickstart_qa_after_reading"]


def questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_question_quotes_a_paragraph_of_its_document():
    rows = questions()
    assert len(rows) == 40
    assert len({r["id"] for r in rows}) == 40 and len({r["question"] for r in rows}) == 40
    assert sum(r["answer"] == "yes" for r in rows) == 20 and {r["answer"] for r in rows} == {"yes", "no"}
    documents = sorted(p.name for p in CORPUS.iterdir())
    assert sorted({r["document"] for r in rows}) == documents  # every document is asked about
    for row in rows:
        paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", (CORPUS / row["document"]).read_text())]
        assert row["passage"] in paragraphs, row["id"]  # verbatim, a whole paragraph
        assert row["question"].endswith("?")


def test_the_task_loads_renders_and_scores_like_the_shipped_benchmarks():
    from lm_eval.api.group import Group

    from bonito_adapt.evaluate.tasks import load_task_objects, task_manager

    manager = task_manager(["quickstart_qa"])  # shipped: no lm-eval index needed
    group = load_task_objects(manager, "quickstart_qa", str(QUESTIONS))
    assert isinstance(group, Group)
    assert {m.metric: (m.aggregation, m.weight_by_size) for m in group.aggregate_metric_list} == {
        "acc": ("mean", False), "f1": ("mean", False)}
    tasks = group.get_all_tasks()
    assert sorted(t.task_name for t in tasks) == sorted(TEMPLATES)
    rows = questions()
    texts = set()
    for task in tasks:
        assert task.OUTPUT_TYPE == "multiple_choice" and set(task._metric_fn_list) == {"acc", "f1"}
        docs = list(task.test_docs())
        assert [task.doc_to_target(d) for d in docs] == [int(r["answer"] == "yes") for r in rows]
        for doc, row in zip(docs, rows, strict=True):
            text = task.doc_to_text(doc)
            assert task.doc_to_choice(doc) == ["No", "Yes"]
            assert row["passage"] in text and row["question"] in text and "{{" not in text
            texts.add(text)
    assert len(texts) == 3 * len(rows)  # three different wordings


def test_answers_other_than_yes_or_no_are_refused(tmp_path):
    from bonito_adapt.errors import UserError
    from bonito_adapt.evaluate.tasks import load_task_objects, task_manager

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "document": "d", "passage": "p", "question": "q?", "answer": "maybe"}) + "\n")
    with pytest.raises(UserError, match="answer must be yes or no"):
        load_task_objects(task_manager(["quickstart_qa"]), "quickstart_qa", str(bad))


def test_recipe_is_the_whole_loop_on_cpu():
    recipe = load_recipe(RECIPE)
    assert recipe.stages() == ["generate", "train", "evaluate", "report"]
    assert recipe.generate.style == "prompted" and recipe.generate.engine == "transformers"
    model = str(ROOT / "models" / "SmolLM2-135M-Instruct")
    assert recipe.generate.model == model and recipe.train.model == model
    assert recipe.train.quantization in ("auto", "none") and recipe.train.max_steps <= 20
    assert recipe.evaluate.tasks == ["quickstart_qa"] and recipe.evaluate.models == ["base", "adapted"]
    assert recipe.evaluate.data_files == {"quickstart_qa": str(QUESTIONS)}
    assert recipe.output_dir == str(ROOT / "runs" / "quickstart")
    assert "make quickstart" in RECIPE.read_text() and "make quickstart" in (ROOT / "README.md").read_text()


def test_recipe_train_evaluate_report_run_on_a_tiny_model(tiny_model_dir, tmp_path):
    """The quickstart's own train/evaluate/report settings, with the tiny Llama standing in for SmolLM2."""
    import torch

    from bonito_adapt.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster for a tiny model
    try:
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text("".join(json.dumps({"input": f"Passage {i}.\n\nIs this passage number {i}?",
                                             "output": "Yes"}) + "\n" for i in range(8)))
        out = tmp_path / "run"
        assert main(["run", str(RECIPE), "--stages", "train,evaluate,report", f"output_dir={out}",
                     f"train.model={tiny_model_dir}", f"train.datasets=[{{path: {tasks}}}]", "train.max_steps=2",
                     "evaluate.limit=4"]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((out / "evaluate" / "results.json").read_text())
    for model in ("base", "adapted"):
        entry = results["models"][model]["quickstart_qa"]
        assert sorted(entry["templates"]) == sorted(TEMPLATES) and entry["examples"] == 4
    adapted = [json.loads(line) for line in (out / "evaluate" / "samples" / "adapted" / "quickstart_qa.jsonl")
               .read_text().splitlines()]
    assert adapted[0]["context"].startswith("<|input|>\n") and adapted[0]["continuations"] == ["No", "Yes"]
    assert "quickstart_qa" in (out / "report" / "index.md").read_text()
