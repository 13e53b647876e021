"""The shipped lm-eval tasks: metrics against hand-computed values, and every paper template, rendered
from real-format records through the shipped tasks, gives the exact prompt and continuation strings
the paper's protocol defines, for every benchmark and wrapper."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

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
EXPECTED_LABELS = {"pubmed_qa": [0, 1], "privacy_qa": [0, 1], "contract_nli": [1, 0, 2], "vitaminc": [1, 0, 2]}
TEMPLATES = json.loads((Path(utils.__file__).parent / "paper_templates.json").read_text())
# sha256 of ../shared/paper_protocol/templates.json, the protocol's byte-exact template file.
TEMPLATES_SHA256 = "e9f9818e0c6ab026e8fd76954664a6e37d8c4e907da0d4ad2c92663446d4bca6"
SHARED_TEMPLATES = Path(__file__).resolve().parents[3] / "shared" / "paper_protocol" / "templates.json"


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
    record = {**SQUAD_RECORD, "answers": {"text": ["a small holder", "not too big"], "answer_start": [0, 26]}}
    # the paper scores against the first gold answer only; SQuAD's own rule takes the best over all of them
    assert utils.squad_first_answer(record, [" not too big\n"]) == {"exact_match": 0.0, "f1": 0.0}
    assert utils.squad_any_answer(record, [" not too big\n"]) == {"exact_match": 1.0, "f1": 1.0}
    partial = utils.squad_first_answer(record, ["too small holder"])
    # "too small holder" vs "a small holder" (articles dropped): overlap 2 of pred 3 and gold 2 -> 0.8
    assert partial["exact_match"] == 0.0 and partial["f1"] == pytest.approx(0.8)


def test_the_shipped_templates_are_the_protocols_file_byte_for_byte():
    shipped = (Path(utils.__file__).parent / "paper_templates.json").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == TEMPLATES_SHA256
    if SHARED_TEMPLATES.is_file():  # beside a developer's checkout; not on every machine
        assert shipped == SHARED_TEMPLATES.read_bytes()


def _plain_jinja_parts(jinja: str, record: dict, choices: list[str] | None) -> list[str]:
    """An independent rendering for short values (no cap reached, no `|||` in the record): plain Jinja."""
    import jinja2

    environment = jinja2.Environment()
    environment.filters["choice"] = random.Random(0).choice
    environment.filters["most_frequent"] = lambda items: items
    rendered = environment.from_string(jinja).render(**record, answer_choices=choices)
    return [part.strip() for part in rendered.split("|||")]


# One template per benchmark written out by hand, for the first record: the exact text the model reads.
HAND_CHECKED = {
    ("pubmed_qa", "Im a doctor"): (
        'I\'m a doctor and I want to answer the question "Does aspirin lower fever in adults?" using The following '
        "passage:\n\nAspirin was given to 40 adults. Fever fell in most.\n\nSummarize the above answer as YES, NO, or "
        "MAYBE?"),
    ("privacy_qa", "prompt_4"): (
        "As a lawyer, can you answer the question given the context?\nQuestion: do you sell my email?\n"
        "Context:We share your email with advertisers."),
    ("contract_nli", "prompt_3"): (
        "Take the following as truth: The Recipient shall return all materials. Then the following statement: "
        '"Recipient shall destroy or return materials." is true, false, or inconclusive?'),
    ("vitaminc", "prompt_2"): (
        'It grossed $12 million. \n\nQuestion: Does this imply that "The film grossed over $10 million."? yes, no or maybe?'),
}
WRAPPED = {"instruct": "<s>Instruct: {x}\nAnswer:", "bonito": "<s><|input|>\n{x}\n<|output|>\n",
           "mistral_instruct": "<s>[INST] {x} [/INST]"}


class _Probe:
    """The evaluate stage's protocol layer without a model: the tokenizer is all it needs to build requests."""

    def __init__(self, tokenizer, protocol: str, wrapper: str):
        from bonito_adapt.evaluate.protocol import ProtocolMixin

        probe_class = type("Probe", (ProtocolMixin,), {})
        self.lm = probe_class()
        self.lm.tokenizer = tokenizer
        self.lm.use(protocol, wrapper)

    def requests(self, task):
        task.build_all_requests(apply_chat_template=self.lm.wraps_prompts,
                                chat_template=self.lm.apply_chat_template if self.lm.wraps_prompts else None)
        return task.instances


@pytest.mark.parametrize("benchmark", sorted(RECORDS))
def test_paper_templates_render_to_the_protocols_strings_through_the_shipped_tasks(benchmark, manager, tmp_path,
                                                                                   tiny_tokenizer):
    from lm_eval.api.group import Group

    from bonito_adapt.evaluate.tasks import load_task_objects

    data = write_jsonl(tmp_path / f"{benchmark}.jsonl", RECORDS[benchmark])
    group = load_task_objects(manager, benchmark, str(data))
    assert isinstance(group, Group) and group.name == benchmark
    aggregated = {m.metric: (m.aggregation, m.weight_by_size) for m in group.aggregate_metric_list}
    assert aggregated == {"acc": ("mean", False), "f1": ("mean", False)}
    tasks = group.get_all_tasks()
    templates = TEMPLATES[benchmark]["templates"]
    assert [t.config.task_alias for t in tasks] == [t["name"] for t in templates]  # the paper's names, in order
    records = [r for r in RECORDS[benchmark] if r.get("split", "test") == "test"]
    for task, template in zip(tasks, templates, strict=True):
        assert task.OUTPUT_TYPE == "multiple_choice" and set(task._metric_fn_list) == {"acc", "f1"}
        assert task._aggregation_list["f1"].__name__ == "macro_f1"  # lm-eval imports utils.py by path
        docs = list(task.test_docs())
        assert [task.doc_to_target(d) for d in docs] == EXPECTED_LABELS[benchmark]
        for doc, record in zip(docs, records, strict=True):
            choices = _plain_jinja_parts(template["answer_choices"], record, None)
            task_input, target = _plain_jinja_parts(template["jinja"], record, choices)
            assert task.doc_to_text(doc) == task_input and task.doc_to_choice(doc) == choices
            assert task.doc_to_target(doc) == choices.index(target)
        if (benchmark, template["name"]) in HAND_CHECKED:
            assert task.doc_to_text(docs[0]) == HAND_CHECKED[(benchmark, template["name"])]

        for wrapper, form in WRAPPED.items():  # what the model scores, request by request
            instances = _Probe(tiny_tokenizer, "paper", wrapper).requests(task)
            _Probe(tiny_tokenizer, "paper", wrapper).lm.paper_requests(instances)
            eos = "" if wrapper == "mistral_instruct" else "</s>"
            for instance in instances:
                doc = instance.doc
                assert instance.args == (form.format(x=doc["paper_input"]),
                                         doc["paper_choices"][instance.idx] + eos)
        plain = _Probe(tiny_tokenizer, "lm_eval", "plain").requests(task)  # lm-eval's own: text, then " choice"
        assert [i.args for i in plain] == [(i.doc["paper_input"], " " + i.doc["paper_choices"][i.idx]) for i in plain]


@pytest.mark.parametrize("domain", ["nyt", "amazon", "reddit"])
def test_squadshifts_templates_render_and_generate_as_the_paper_did(domain, manager, tmp_path, tiny_tokenizer):
    from bonito_adapt.evaluate.tasks import load_task_objects

    data = write_jsonl(tmp_path / "squad.jsonl", [SQUAD_RECORD])
    group = load_task_objects(manager, f"squadshifts_{domain}", str(data))
    templates = TEMPLATES[f"squadshifts_{domain}"]["templates"]
    tasks = group.get_all_tasks()
    assert group.name == f"squadshifts_{domain}" and [t.config.task_alias for t in tasks] == [t["name"] for t in templates]
    for task, template in zip(tasks, templates, strict=True):
        assert task.OUTPUT_TYPE == "generate_until"
        assert task.config.generation_kwargs == {"until": [], "do_sample": False, "max_gen_toks": 25}
        doc = next(iter(task.test_docs()))
        text = task.doc_to_text(doc)
        if template["name"] == "question_num_hint_answer":  # "Question k:" or "Problem k:", k drawn in 1..11
            prefix, rest = text.split(": ", 1)
            word, number = prefix.split(" ")
            assert word in ("Question", "Problem") and 1 <= int(number) <= 11
            assert rest == f"{SQUAD_RECORD['question']}\n\nHint: {SQUAD_RECORD['context']}"
        else:
            assert text == _plain_jinja_parts(template["jinja"], SQUAD_RECORD, None)[0]
        place = {"nyt": "New York Times", "amazon": "Amazon", "reddit": "Reddit"}[domain]
        if template["name"] in ("exam", "wondered"):
            assert f"searched {place}" in text or f"info on {place}" in text
        assert task.doc_to_target(doc) == "not too big"  # the first gold answer
        assert task.process_results(doc, [" not too big "]) == {"exact_match": 1.0, "f1": 1.0}
        instances = _Probe(tiny_tokenizer, "paper", "instruct").requests(task)
        # no BOS text in a generation prompt: the tokenizer adds its BOS, as vLLM did for the paper
        assert [i.args[0] for i in instances] == [f"Instruct: {text}\nAnswer:"]


def test_promptsource_semantics_cap_every_variable_and_protect_the_separator():
    from bonito_adapt.evaluate.tasks.paper_prompts import PaperTemplate

    template = PaperTemplate("contract_nli", "prompt_2")
    words = ("word " * 600).strip()  # 2,999 characters
    long = {"premise": words, "hypothesis": "h", "label": 1}
    task_input, target = template.input_and_target(long)
    premise = task_input.split(" \n\nQuestion:")[0]
    # Jinja's truncate(2048): 2,045 characters cut back to the last whole word, then "..."
    assert premise == words[:2045].rsplit(" ", 1)[0] + "..." and target == "Yes"
    exactly = "x" * 2053  # within the leeway of 5: kept whole
    assert template.input_and_target({**long, "premise": exactly})[0].startswith(exactly + " \n")
    piped = {**long, "hypothesis": "a ||| b"}  # a record's own `|||` does not split the prompt
    assert '"a ||| b"' in template.input_and_target(piped)[0]
    with pytest.raises(ValueError, match="answer_choices"):
        template.apply({**long, "answer_choices": "x"})


def test_random_prompt_parts_vary_by_record_and_repeat_with_the_seed():
    from bonito_adapt.evaluate.tasks.paper_prompts import PaperTemplate

    records = [{**SQUAD_RECORD, "question": f"q{i}?"} for i in range(40)]

    def render_all():
        template = PaperTemplate("squadshifts_amazon", "question_num_hint_answer")
        return [template.input_and_target(record)[0] for record in records]

    first, again = render_all(), render_all()
    assert first == again  # seeded
    words = {text.split(" ", 1)[0] for text in first}
    numbers = {text.split(":", 1)[0].split(" ")[1] for text in first}
    assert words == {"Question", "Problem"} and len(numbers) > 5  # drawn per record, not once per template


def test_public_dataset_defaults_are_the_papers_datasets(manager):
    from lm_eval.tasks._yaml_loader import load_yaml

    expected = {"pubmed_qa_im_a_doctor": ("BatsResearch/bonito-experiment-eval", "pubmed_qa", "test"),
                "privacy_qa_prompt_1": ("BatsResearch/bonito-experiment-eval", "privacy_qa", "test"),
                "contract_nli_prompt_5": ("BatsResearch/bonito-experiment-eval", "contract_nli", "test"),
                "vitaminc_prompt_3": ("BatsResearch/bonito-experiment-eval", "vitaminc", "test"),
                "squadshifts_reddit_exam": ("ludwigschmidt/squadshifts", "reddit", "test")}
    for name, (path, config, split) in expected.items():
        loaded = load_yaml(manager.task_index[name].yaml_path, resolve_func=False)
        assert (loaded["dataset_path"], loaded.get("dataset_name"), loaded["test_split"]) == (path, config, split)


def test_a_templates_docs_are_rendered_once_per_dataset(monkeypatch):
    """lm-eval calls process_docs on every test_docs(); the rendering runs once per (template, dataset content),
    and what repeats is what a fresh render gives."""
    from datasets import Dataset

    from bonito_adapt.evaluate.tasks import paper_prompts

    monkeypatch.setattr(paper_prompts, "_PROCESSED", paper_prompts.OrderedDict())
    renders = []
    real = paper_prompts.PaperTemplate.input_and_target
    monkeypatch.setattr(paper_prompts.PaperTemplate, "input_and_target",
                        lambda self, record: renders.append(record["premise"]) or real(self, record))
    process = paper_prompts.ranked_docs("contract_nli", "prompt_1")
    records = [{"premise": f"The party shall keep clause {i} secret.", "hypothesis": "h", "label": i % 3}
               for i in range(5)]
    dataset = Dataset.from_list(records)
    first = process(dataset)
    assert len(renders) == 5
    again = process(Dataset.from_list(records))  # the same content loaded again: same fingerprint
    assert len(renders) == 5 and again.to_list() == first.to_list()
    assert process.__wrapped__(dataset).to_list() == first.to_list()  # a fresh render: the same rows
    assert len(renders) == 10
    other = process(Dataset.from_list(records[:2]))  # other content: rendered
    assert len(renders) == 12 and other.to_list() == first.to_list()[:2]
    assert paper_prompts.ranked_docs("contract_nli", "prompt_2")(dataset)["paper_input"] != first["paper_input"]
