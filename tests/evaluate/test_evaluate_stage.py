"""The evaluate stage: adapter evaluation, local data, errors, results layout, resume, and a real-model check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonito_adapt import evaluate
from bonito_adapt.config import Recipe
from bonito_adapt.errors import UserError
from bonito_adapt.evaluate import stage as evaluate_stage
from bonito_adapt.evaluate.config import EvaluateConfig
from bonito_adapt.evaluate.tasks import task_manager
from bonito_adapt.evaluate.tasks.utils import macro_f1
from bonito_adapt.rundir import read_manifest
from bonito_adapt.train.data import training_prompt

pytest.importorskip("lm_eval")

from _data import LABELS, PUBMED_RECORDS, make_lora_adapter, write_jsonl  # noqa: E402


def make_recipe(tmp_path: Path, **evaluate_fields) -> Recipe:
    return Recipe(name="t", output_dir=str(tmp_path / "run"), evaluate=EvaluateConfig(**evaluate_fields))


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), identity=False)


def test_base_and_adapted_tiny_model_results_layout_and_resume(tiny_model_dir, tiny_adapter, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS)
    recipe = make_recipe(tmp_path, tasks=["pubmed_qa"], base_model=str(tiny_model_dir), adapter=str(tiny_adapter),
                         data_files={"pubmed_qa": str(data)}, limit=3)
    out = evaluate.run(recipe, recipe.run_dir)
    assert out == recipe.run_dir / "evaluate"

    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"base", "adapted"}
    # pubmed_qa is a paper benchmark: protocol auto scores it as the paper's code, with its wrappers
    assert results["config"]["protocol"] == "auto"
    for model, wrapper in (("base", "instruct"), ("adapted", "bonito")):
        assert results["models"][model]["pubmed_qa"]["protocol"] == "paper"
        assert results["models"][model]["pubmed_qa"]["prompt_format"] == wrapper
    for model in ("base", "adapted"):
        entry = results["models"][model]["pubmed_qa"]
        assert len(entry["templates"]) == 5 and entry["examples"] == 3
        # the benchmark's number is the unweighted mean over its templates
        for metric in ("acc", "f1"):
            values = [t[metric] for t in entry["templates"].values()]
            assert entry["average"][metric] == pytest.approx(sum(values) / 5)

        samples = read_samples(out / "samples" / model / "pubmed_qa.jsonl")
        assert len(samples) == 5 * 3
        for template, metrics in entry["templates"].items():
            rows = [s for s in samples if s["template"] == template]
            # the stage's numbers follow from its own per-sample predictions
            assert metrics["acc"] == pytest.approx(sum(r["prediction"] == r["target"] for r in rows) / len(rows))
            assert metrics["f1"] == pytest.approx(macro_f1([(r["target"], r["prediction"]) for r in rows]))
        raw = json.loads((out / "raw" / model / "pubmed_qa.json").read_text())
        assert "pubmed_qa" in raw["results"] and "samples" not in raw

    # The samples show exactly what was scored: BOS text + wrapper around the template's input, and each
    # answer choice stripped and followed by the EOS text.
    base_rows = read_samples(out / "samples" / "base" / "pubmed_qa.jsonl")
    adapted_rows = read_samples(out / "samples" / "adapted" / "pubmed_qa.jsonl")
    for base_row, adapted_row in zip(base_rows, adapted_rows, strict=True):
        assert base_row["context"].startswith("<s>Instruct: ") and base_row["context"].endswith("\nAnswer:")
        text = base_row["context"][len("<s>Instruct: "):-len("\nAnswer:")]
        assert text == text.strip() and text
        assert adapted_row["context"] == "<s>" + training_prompt(text)
        for row in (base_row, adapted_row):
            assert row["continuations"] == [choice + "</s>" for choice in row["answer_choices"]]
            assert sorted(row["answer_choices"]) == sorted(LABELS)
    # the adapter is really applied: same documents, different scores
    assert adapted_rows[0]["loglikelihoods"] != base_rows[0]["loglikelihoods"]

    # rerun: up to date, nothing loaded
    def no_model(*args, **kwargs):
        raise AssertionError("a finished (model, task) pair was evaluated again")

    monkeypatch.setattr(evaluate_stage, "build_lm", no_model)
    assert evaluate.run(recipe, recipe.run_dir) == out
    # killed before the end (no manifest, no results.json): finished pairs come from disk
    (out / "manifest.json").unlink()
    (out / "results.json").unlink()
    evaluate.run(recipe, recipe.run_dir)
    assert json.loads((out / "results.json").read_text())["models"] == results["models"]


def test_execution_settings_keep_finished_pairs(tiny_model_dir, tmp_path, monkeypatch):
    """batch_size, shared_context and backend change how scores are computed: a finished stage stays up to
    date, a killed one keeps its finished (model, task) pairs; limit (a result setting) re-evaluates."""
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS)
    fields = {"tasks": ["pubmed_qa"], "models": ["base"], "base_model": str(tiny_model_dir),
              "data_files": {"pubmed_qa": str(data)}, "limit": 2}
    recipe = make_recipe(tmp_path, **fields)
    out = evaluate.run(recipe, recipe.run_dir)
    built = []
    real_build = evaluate_stage.build_lm
    monkeypatch.setattr(evaluate_stage, "build_lm", lambda *a, **k: built.append(1) or real_build(*a, **k))
    other = make_recipe(tmp_path, **fields, batch_size=1, shared_context=False, backend="vllm")
    assert evaluate.run(other, other.run_dir) == out and built == []
    (out / "manifest.json").unlink()  # killed after the pair finished
    evaluate.run(make_recipe(tmp_path, **fields, batch_size=3), recipe.run_dir)
    assert built == [] and read_manifest(out)["execution"]["evaluate"]["batch_size"] == 3
    evaluate.run(make_recipe(tmp_path, **{**fields, "limit": 3}), recipe.run_dir)
    assert built == [1] and json.loads((out / "results.json").read_text())["models"]["base"]["pubmed_qa"]["examples"] == 3


def test_chat_prompt_format_uses_the_tokenizer_chat_template(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS[:2])
    recipe = make_recipe(tmp_path, tasks=["pubmed_qa"], base_model=str(tiny_model_dir), models=["base"],
                         prompt_format={"base": "chat"}, data_files={"pubmed_qa": str(data)})
    out = evaluate.run(recipe, recipe.run_dir)
    row = read_samples(out / "samples" / "base" / "pubmed_qa.jsonl")[0]
    # paper protocol (auto for pubmed_qa): the BOS text goes before whatever the wrapper made
    assert row["context"].startswith("<s><|im_start|>user\n") and row["context"].endswith("<|im_start|>assistant\n")


def test_lm_eval_protocol_keeps_lm_eval_requests(tiny_model_dir, tiny_adapter, tmp_path):
    """protocol: lm_eval: the answer choice after lm-eval's target delimiter (plain) or right after the
    training prompt (bonito), no BOS or EOS text."""
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS[:2])
    recipe = make_recipe(tmp_path, tasks=["pubmed_qa"], base_model=str(tiny_model_dir), adapter=str(tiny_adapter),
                         protocol="lm_eval", data_files={"pubmed_qa": str(data)})
    out = evaluate.run(recipe, recipe.run_dir)
    results = json.loads((out / "results.json").read_text())["models"]
    assert results["base"]["pubmed_qa"]["prompt_format"] == "plain"
    assert results["adapted"]["pubmed_qa"]["prompt_format"] == "bonito"
    base_row = read_samples(out / "samples" / "base" / "pubmed_qa.jsonl")[0]
    adapted_row = read_samples(out / "samples" / "adapted" / "pubmed_qa.jsonl")[0]
    assert not base_row["context"].startswith("<s>") and adapted_row["context"] == training_prompt(base_row["context"])
    assert base_row["continuations"] == [" " + c for c in base_row["answer_choices"]]
    assert adapted_row["continuations"] == adapted_row["answer_choices"]


# Two NDAs asked three hypotheses each, as ContractNLI's test split asks 17 about each whole NDA.
NDAS = ["The Recipient shall hold all Confidential Information in strict confidence and return it on request.",
        "This Agreement is governed by the laws of Ohio and lasts two years from the Effective Date."]
CONTRACT_RECORDS = [{"doc_id": 3 * n + h, "nda": f"nda-{n}", "premise": premise, "evidence": [], "label": h,
                     "hypothesis": hypothesis}
                    for n, premise in enumerate(NDAS)
                    for h, hypothesis in enumerate(["Recipient shall return materials.", "Recipient may share with "
                                                    "employees.", "Recipient may create derivative works."])]


@pytest.mark.parametrize(("protocol", "task"), [("paper", "pubmed_qa"), ("lm_eval", "pubmed_qa"),
                                                ("paper", "contract_nli")])
def test_shared_context_scoring_equals_one_forward_per_choice(tiny_model_dir, tiny_adapter, tmp_path, protocol, task):
    """Every choice of the requests' trie scored in packed rows gives lm-eval's per-choice log-likelihoods
    (fp32, within 1e-4) and the same picks, for the base model and through an adapter; with contexts that
    share a document (ContractNLI) and contexts that share nothing but the prompt (PubMedQA)."""
    records = PUBMED_RECORDS if task == "pubmed_qa" else CONTRACT_RECORDS
    data = write_jsonl(tmp_path / f"{task}.jsonl", records)
    rows = {}
    for shared in (True, False):
        recipe = make_recipe(tmp_path / str(shared), tasks=[task], base_model=str(tiny_model_dir),
                             adapter=str(tiny_adapter), protocol=protocol, shared_context=shared, dtype="float32",
                             batch_size=3, data_files={task: str(data)})
        out = evaluate.run(recipe, recipe.run_dir)
        rows[shared] = {model: read_samples(out / "samples" / model / f"{task}.jsonl") for model in ("base", "adapted")}
    for model in ("base", "adapted"):
        assert len(rows[True][model]) == 5 * len(records)
        for shared_row, per_choice_row in zip(rows[True][model], rows[False][model], strict=True):
            assert shared_row["context"] == per_choice_row["context"]
            assert shared_row["continuations"] == per_choice_row["continuations"]
            assert shared_row["loglikelihoods"] == pytest.approx(per_choice_row["loglikelihoods"], abs=1e-4)
            assert shared_row["prediction"] == per_choice_row["prediction"]


def test_config_errors_are_one_line_user_errors(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS)
    cases = [
        ({"tasks": ["pubmed_qa"], "data_files": {"vitaminc": str(data)}}, "evaluate.data_files: 'vitaminc'"),
        ({"tasks": ["pubmed_qa"], "data_files": {"pubmed_qa": str(tmp_path / "x.txt")}}, r"is not a \.jsonl, \.json, \.csv"),
        ({"tasks": ["pubmed_qa"], "data_files": {"pubmed_qa": str(tmp_path / "missing.jsonl")}}, "does not exist"),
        ({"tasks": ["pubmed_qa"]}, "holds no PEFT adapter"),  # models default to base + adapted
    ]
    for fields, message in cases:
        recipe = make_recipe(tmp_path, base_model=str(tiny_model_dir), **fields)
        with pytest.raises(UserError, match=message) as caught:
            evaluate.run(recipe, recipe.run_dir)
        assert "\n" not in str(caught.value)
    recipe = Recipe(name="t", output_dir=str(tmp_path / "r"), evaluate=EvaluateConfig(tasks=["pubmed_qa"]))
    with pytest.raises(UserError, match="evaluate.base_model"):
        evaluate.run(recipe, recipe.run_dir)


def test_unknown_task_lists_close_matches_and_any_lm_eval_task_is_accepted():
    # one test: both need lm-eval's full task index, which takes seconds to build
    with pytest.raises(UserError, match="unknown task 'pubmed_qaa'.*did you mean pubmed_qa") as caught:
        task_manager(["pubmed_qaa"])
    assert "\n" not in str(caught.value)
    manager = task_manager(["pubmed_qa", "arc_easy"])
    assert "arc_easy" in manager.all_tasks and "vitaminc" in manager.all_tasks


# --------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_smollm2_numbers_equal_a_direct_ranked_scoring(smollm2_dir, tmp_path):
    """The stage's acc and macro-F1 under the paper protocol equal a by-hand ranked classification with
    the model's logits: BOS text + wrapper, each choice + EOS tokenized on its own, summed log-probs."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bonito_adapt.evaluate.protocol import wrap
    from bonito_adapt.evaluate.tasks import load_task_objects, task_manager

    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS)
    adapter = make_lora_adapter(smollm2_dir, tmp_path / "adapter", identity=True)
    recipe = make_recipe(tmp_path, tasks=["pubmed_qa"], base_model=str(smollm2_dir), adapter=str(adapter),
                         data_files={"pubmed_qa": str(data)}, batch_size=4)
    out = evaluate.run(recipe, recipe.run_dir)
    results = json.loads((out / "results.json").read_text())["models"]

    # Reference: render each template's input with the task definition, then score by hand.
    group = load_task_objects(task_manager(["pubmed_qa"]), "pubmed_qa", str(data))
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for model_name, wrapper in (("base", "instruct"), ("adapted", "bonito")):
        for task in group.get_all_tasks():
            golds, preds = [], []
            for doc in task.test_docs():
                source = ids(tokenizer.bos_token + wrap(wrapper, task.doc_to_text(doc), "paper"))
                scores = []
                for choice in task.doc_to_choice(doc):
                    target = ids(choice.strip() + tokenizer.eos_token)
                    with torch.no_grad():
                        logits = model(torch.tensor([source + target])).logits[0, len(source) - 1:-1]
                    log_probs = torch.log_softmax(logits.float(), dim=-1)
                    scores.append(log_probs[torch.arange(len(target)), torch.tensor(target)].sum().item())
                preds.append(max(range(len(scores)), key=scores.__getitem__))
                golds.append(task.doc_to_target(doc))
                assert task.doc_to_choice(doc)[golds[-1]] == doc["final_decision"]
            accuracy = sum(g == p for g, p in zip(golds, preds, strict=True)) / len(golds)
            stage = results[model_name]["pubmed_qa"]["templates"][task.task_name]
            assert stage["acc"] == pytest.approx(accuracy), (model_name, task.task_name)
            # the paper's code: sklearn's f1_score(average="macro")
            assert stage["f1"] == pytest.approx(f1_score(golds, preds, average="macro")), (model_name, task.task_name)


def test_two_processes_under_torchrun_split_the_requests_and_rank_zero_writes(tiny_model_dir, tmp_path):
    """Data parallel on CPU (gloo): lm-eval gives each process its share of the requests and gathers
    the results on rank 0, which alone writes; the results equal one process's run."""
    import os
    import subprocess
    import sys

    import yaml

    child = str(Path(__file__).resolve().parents[1] / "_interrupt_child.py")
    data = write_jsonl(tmp_path / "pubmed.jsonl", PUBMED_RECORDS)
    section = {"tasks": ["pubmed_qa"], "models": ["base"], "base_model": str(tiny_model_dir),
               "data_files": {"pubmed_qa": str(data)}, "batch_size": 2}
    runs = {}
    for name, launcher in (("parallel", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
                           ("single", [])):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({"name": name, "output_dir": str(tmp_path / name), "evaluate": section}))
        marks = tmp_path / f"marks-{name}"
        marks.mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "BONITO_TEST_MARKS": str(marks)}
        done = subprocess.run([sys.executable, *launcher, child, "run", str(recipe)], capture_output=True, text=True,
                              env=env, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        scored: dict[str, int] = {}
        for mark in marks.glob("loglikelihood-*"):
            rank, count = mark.name.split("-")[1:3]
            scored[rank] = scored.get(rank, 0) + int(count)
        runs[name] = (json.loads((tmp_path / name / "evaluate" / "results.json").read_text()), scored)
    (parallel, split), (single, alone) = runs["parallel"], runs["single"]
    requests = 5 * len(PUBMED_RECORDS) * 3  # templates x documents x choices
    assert alone == {"0": requests}
    assert set(split) == {"0", "1"} and split["0"] + split["1"] == requests and 0 < split["1"] < requests
    assert parallel["models"] == single["models"] and parallel["config"]["processes"] == 2
    samples = read_samples(tmp_path / "parallel" / "evaluate" / "samples" / "base" / "pubmed_qa.jsonl")
    assert len(samples) == 5 * len(PUBMED_RECORDS)  # every document once, gathered on rank 0

