"""The shipped lm-eval tasks: metrics against hand-computed values, and every task loads and renders."""

from __future__ import annotations

import json
import random

import pytest

from bonito_adapt.evaluate.tasks import utils

pytest.importorskip("lm_eval")

# A few made-up records per benchmark, in the public datasets' field layouts.
RECORDS = {
    "pubmed_qa": [
        {"pubid": 1, "question": "Does aspirin lower fever in adults?", "split": "test",
         "context": {"contexts": ["Aspirin was given to 40 adults.", "Fever fell in most."], "labels": ["M", "R"],
                     "meshes": ["Aspirin"]}, "long_answer": "It does.", "final_decision": "yes"},
        {"pubid": 2, "question": "Is coffee linked to gout?", "split": "test",
         "context": {"contexts": ["No association was found."], "labels": ["R"], "meshes": []},
         "long_answer": "No.", "final_decision": "no"},
        {"pubid": 3, "question": "Do night shifts harm sleep?", "split": "train",
         "context": {"contexts": ["Results were mixed."], "labels": ["R"], "meshes": []},
         "long_answer": "Unclear.", "final_decision": "maybe"},
    ],
    "privacy_qa": [
        {"text": "We share your email with advertisers.", "question": "do you sell my email?", "answer": "Relevant"},
        {"text": "Our office is in Berlin.", "question": "do you track location?", "answer": "Irrelevant"},
    ],
    "contract_nli": [
        {"doc_id": 1, "nda": "nda-1", "premise": "The Recipient shall return all materials.", "evidence": [],
         "hypothesis": "Recipient shall destroy or return materials.", "label": 1},
        {"doc_id": 2, "nda": "nda-1", "premise": "The Recipient may disclose to employees.", "evidence": [],
         "hypothesis": "Recipient may not share with employees.", "label": 0},
        {"doc_id": 3, "nda": "nda-2", "premise": "This agreement is governed by Ohio law.", "evidence": [],
         "hypothesis": "Recipient may create derivative works.", "label": 2},
    ],
    "vitaminc": [
        {"unique_id": "a", "claim": "The film grossed over $10 million.", "evidence": "It grossed $12 million.",
         "label": "SUPPORTS", "source": "real"},
        {"unique_id": "b", "claim": "The band has five members.", "evidence": "The band has four members.",
         "label": "REFUTES", "source": "real"},
        {"unique_id": "c", "claim": "The city has a zoo.", "evidence": "The city has a river.",
         "label": "NOT ENOUGH INFO", "source": "synthetic"},
    ],
}
SQUAD_RECORD = {"id": "q1", "title": "Review", "context": "It's a very nice holder - not too big.",
                "question": "What size is the holder?",
                "answers": {"text": ["not too big", "not too big."], "answer_start": [26, 26]}}
EXPECTED_LABELS = {"pubmed_qa": [0, 1], "privacy_qa": [1, 0], "contract_nli": [1, 0, 2], "vitaminc": [1, 0, 2]}
QUESTION_FIELD = {"pubmed_qa": "question", "privacy_qa": "question", "contract_nli": "hypothesis", "vitaminc": "claim"}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def manager():
    from bonito_adapt.evaluate.tasks import task_manager

    return task_manager(["pubmed_qa"])


def test_macro_f1_matches_a_hand_computed_value():
    pairs = [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2)]
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 2, fn 0 -> 1/2; class 2: tp 1, fp 0, fn 1 -> 2/3
    assert utils.macro_f1(pairs) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    # a class only ever predicted counts with F1 0, as in scikit-learn
    assert utils.macro_f1([(0, 0), (0, 1)]) == pytest.approx((2 / 3 + 0) / 2)


def test_macro_f1_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    pairs = [(rng.randrange(3), rng.randrange(3)) for _ in range(200)]
    golds, preds = zip(*pairs, strict=True)
    assert utils.macro_f1(pairs) == pytest.approx(sklearn_metrics.f1_score(golds, preds, average="macro"))


def test_squad_metrics_match_hand_computed_values():
    assert utils.normalize_answer("The  Cat, sat!") == "cat sat"
    assert utils.squad_exact_match("The cat!", "cat") == 1.0
    # "cat sat" vs "cat sat down": overlap 2, precision 1, recall 2/3 -> F1 0.8
    assert utils.squad_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    assert utils.squad_f1("dog", "cat") == 0.0
    scores = utils.process_squad_results(SQUAD_RECORD, [" not too big\n"])
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    partial = utils.process_squad_results(SQUAD_RECORD, ["too big really"])
    # best gold "not too big": overlap 2 of pred 3 and gold 3 -> 2/3
    assert partial["exact_match"] == 0.0 and partial["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("benchmark", sorted(RECORDS))
def test_every_template_loads_from_local_files_and_renders(benchmark, manager, tmp_path):
    from lm_eval.api.group import Group

    from bonito_adapt.evaluate.tasks import load_task_objects

    data = write_jsonl(tmp_path / f"{benchmark}.jsonl", RECORDS[benchmark])
    group = load_task_objects(manager, benchmark, str(data))
    assert isinstance(group, Group) and group.name == benchmark
    aggregated = {m.metric: (m.aggregation, m.weight_by_size) for m in group.aggregate_metric_list}
    assert aggregated == {"acc": ("mean", False), "f1": ("mean", False)}
    templates = group.get_all_tasks()
    assert len(templates) == 5 and len({t.task_name for t in templates}) == 5
    prompts = set()
    for task in templates:
        assert task.OUTPUT_TYPE == "multiple_choice"
        docs = list(task.test_docs())
        assert [task.doc_to_target(d) for d in docs] == EXPECTED_LABELS[benchmark]
        for doc in docs:
            text, choices = task.doc_to_text(doc), task.doc_to_choice(doc)
            question = doc[QUESTION_FIELD[benchmark]].strip()
            assert question in text and "{{" not in text
            assert len(choices) == (2 if benchmark == "privacy_qa" else 3)
            prompts.add(text)
        assert {m for m in task._metric_fn_list} == {"acc", "f1"}
        # lm-eval imports eval_tasks/utils.py by path, so compare the function, not the object
        assert task._aggregation_list["f1"].__name__ == "macro_f1"
        assert task._aggregation_list["f1"]([(0, 0), (1, 0)]) == pytest.approx(utils.macro_f1([(0, 0), (1, 0)]))
    assert len(prompts) == 5 * len(EXPECTED_LABELS[benchmark])  # five different wordings


@pytest.mark.parametrize("domain", ["nyt", "amazon", "reddit"])
def test_squadshifts_tasks_load_and_render(domain, manager, tmp_path):
    from bonito_adapt.evaluate.tasks import load_task_objects

    data = write_jsonl(tmp_path / "squad.jsonl", [SQUAD_RECORD])
    task = load_task_objects(manager, f"squadshifts_{domain}", str(data))
    assert task.task_name == f"squadshifts_{domain}" and task.OUTPUT_TYPE == "generate_until"
    doc = next(iter(task.test_docs()))
    assert task.doc_to_text(doc).endswith("Answer:") and SQUAD_RECORD["context"] in task.doc_to_text(doc)
    assert task.process_results(doc, ["not too big"]) == {"exact_match": 1.0, "f1": 1.0}


def test_public_dataset_defaults_are_the_papers_datasets(manager):
    from lm_eval.tasks._yaml_loader import load_yaml

    expected = {"pubmed_qa_abstract_question": ("qiaojin/PubMedQA", "pqa_labeled"),
                "privacy_qa_is_relevant": ("nguha/legalbench", "privacy_policy_qa"),
                "contract_nli_gpt3_style": ("kiddothe2b/contract-nli", "contractnli_a"),
                "vitaminc_gpt3_style": ("tals/vitaminc", None),
                "squadshifts_reddit": ("ludwigschmidt/squadshifts", "reddit")}
    for name, (path, config) in expected.items():
        loaded = load_yaml(manager.task_index[name].yaml_path, resolve_func=False)
        assert (loaded["dataset_path"], loaded.get("dataset_name")) == (path, config)
