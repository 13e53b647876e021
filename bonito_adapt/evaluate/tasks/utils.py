"""Document preprocessing and metrics for the shipped lm-eval tasks (referenced by `!function utils.*`).

lm-eval imports this file when it indexes the task folder: the paper templates' renderer is imported
from the package (`paper_prompts.py`), which needs only jinja2 and the standard library.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

from bonito_adapt.evaluate.tasks.paper_prompts import ranked_docs, squad_docs

QUICKSTART_QA_LABELS = ["no", "yes"]  # the quickstart_qa templates' choices, in this order: No, Yes


def keep_test_split(dataset):
    """PubMedQA: records with a `split` field keep only the official 500-question test set (the local
    PQA-L file marks it); a dataset without the field (the paper's evaluation set) is kept whole."""
    if "split" in dataset.column_names:
        return dataset.filter(lambda doc: doc["split"] == "test")
    return dataset


# One process_docs per paper template: renders it into paper_input / paper_target / paper_choices / paper_label
# (ranked) or paper_input / paper_target (SQuADShifts). Names: paper_prompts.task_name(benchmark, template).
pubmed_qa_given_a_passage_question_at_end = ranked_docs("pubmed_qa", "Given a passage (question at end)", prepare=keep_test_split)
pubmed_qa_im_a_doctor = ranked_docs("pubmed_qa", "Im a doctor", prepare=keep_test_split)
pubmed_qa_what_is_the_answer = ranked_docs("pubmed_qa", "What is the answer", prepare=keep_test_split)
pubmed_qa_please_answer = ranked_docs("pubmed_qa", "Please answer", prepare=keep_test_split)
pubmed_qa_given_a_passage_question_at_start = ranked_docs("pubmed_qa", "Given a passage (question at start)", prepare=keep_test_split)
privacy_qa_prompt_1 = ranked_docs("privacy_qa", "prompt_1")
privacy_qa_prompt_2 = ranked_docs("privacy_qa", "prompt_2")
privacy_qa_prompt_3 = ranked_docs("privacy_qa", "prompt_3")
privacy_qa_prompt_4 = ranked_docs("privacy_qa", "prompt_4")
privacy_qa_prompt_5 = ranked_docs("privacy_qa", "prompt_5")
contract_nli_prompt_1 = ranked_docs("contract_nli", "prompt_1")
contract_nli_prompt_2 = ranked_docs("contract_nli", "prompt_2")
contract_nli_prompt_3 = ranked_docs("contract_nli", "prompt_3")
contract_nli_prompt_4 = ranked_docs("contract_nli", "prompt_4")
contract_nli_prompt_5 = ranked_docs("contract_nli", "prompt_5")
vitaminc_prompt_1 = ranked_docs("vitaminc", "prompt_1")
vitaminc_prompt_2 = ranked_docs("vitaminc", "prompt_2")
vitaminc_prompt_3 = ranked_docs("vitaminc", "prompt_3")
vitaminc_prompt_4 = ranked_docs("vitaminc", "prompt_4")
vitaminc_prompt_5 = ranked_docs("vitaminc", "prompt_5")
squadshifts_nyt_after = squad_docs("squadshifts_nyt", "after")
squadshifts_nyt_exam = squad_docs("squadshifts_nyt", "exam")
squadshifts_nyt_wondered = squad_docs("squadshifts_nyt", "wondered")
squadshifts_nyt_pick_one_answer = squad_docs("squadshifts_nyt", "pick_one_answer")
squadshifts_nyt_question_num_hint_answer = squad_docs("squadshifts_nyt", "question_num_hint_answer")
squadshifts_amazon_after = squad_docs("squadshifts_amazon", "after")
squadshifts_amazon_exam = squad_docs("squadshifts_amazon", "exam")
squadshifts_amazon_wondered = squad_docs("squadshifts_amazon", "wondered")
squadshifts_amazon_pick_one_answer = squad_docs("squadshifts_amazon", "pick_one_answer")
squadshifts_amazon_question_num_hint_answer = squad_docs("squadshifts_amazon", "question_num_hint_answer")
squadshifts_reddit_after = squad_docs("squadshifts_reddit", "after")
squadshifts_reddit_exam = squad_docs("squadshifts_reddit", "exam")
squadshifts_reddit_wondered = squad_docs("squadshifts_reddit", "wondered")
squadshifts_reddit_pick_one_answer = squad_docs("squadshifts_reddit", "pick_one_answer")
squadshifts_reddit_question_num_hint_answer = squad_docs("squadshifts_reddit", "question_num_hint_answer")


def process_quickstart_qa(dataset):
    """`answer` yes/no -> `label` 1/0 (choices No, Yes); strip passage and question."""
    def _add(doc):
        answer = str(doc["answer"]).strip().lower()
        if answer not in QUICKSTART_QA_LABELS:
            raise ValueError(f"quickstart_qa: answer must be yes or no, got {doc['answer']!r} (id {doc.get('id')!r})")
        return {"passage": doc["passage"].strip(), "question": doc["question"].strip(),
                "label": QUICKSTART_QA_LABELS.index(answer)}

    return dataset.map(_add)


def macro_f1(items: Iterable[tuple[int, int]]) -> float:
    """Macro-averaged F1 over (gold, pred) pairs, across every class seen as gold or prediction.

    Same definition as scikit-learn's ``f1_score(average="macro")``: a class's F1 is 0 when it
    has no true positives. lm-eval's built-in ``f1`` aggregation is binary, hence this one.
    """
    pairs = [(int(gold), int(pred)) for gold, pred in items]
    if not pairs:
        return 0.0
    classes = sorted({gold for gold, _ in pairs} | {pred for _, pred in pairs})
    scores = []
    for label in classes:
        true_pos = sum(1 for gold, pred in pairs if gold == label and pred == label)
        false_pos = sum(1 for gold, pred in pairs if gold != label and pred == label)
        false_neg = sum(1 for gold, pred in pairs if gold == label and pred != label)
        denominator = 2 * true_pos + false_pos + false_neg
        scores.append(2 * true_pos / denominator if denominator else 0.0)
    return sum(scores) / len(scores)


# --- SQuAD, as the official v1.1 evaluation script normalises and scores answers -------------

def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _squad_scores(prediction: str, golds: list[str]) -> dict[str, float]:
    golds = golds or [""]
    return {"exact_match": max(squad_exact_match(prediction, gold) for gold in golds),
            "f1": max(squad_f1(prediction, gold) for gold in golds)}


def squad_first_answer(doc, results) -> dict[str, float]:
    """EM and F1 of the stripped generation against the first gold answer only, as the paper scores
    (its references are `answers.text[0]`); in 0..1 (the report shows percent)."""
    answers = list(doc["answers"]["text"])
    return _squad_scores(results[0].strip(), answers[:1])


def squad_any_answer(doc, results) -> dict[str, float]:
    """Best EM and F1 of the stripped generation against any gold answer (SQuAD's own rule), in 0..1."""
    return _squad_scores(results[0].strip(), list(doc["answers"]["text"]))
