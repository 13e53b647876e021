"""Document preprocessing and metrics for the shipped lm-eval tasks (referenced by `!function utils.*`).

Kept free of heavy imports: lm-eval imports this file when it indexes the task folder.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

PUBMED_QA_LABELS = ["yes", "no", "maybe"]
PRIVACY_QA_LABELS = ["Irrelevant", "Relevant"]
# ContractNLI's own label ids (0 contradiction, 1 entailment, 2 not mentioned) double as choice
# indices: every NLI template lists its choices in that order (No/Yes/Maybe, False/True/Inconclusive).
VITAMINC_LABELS = ["REFUTES", "SUPPORTS", "NOT ENOUGH INFO"]
QUICKSTART_QA_LABELS = ["no", "yes"]  # the quickstart_qa templates' choices, in this order: No, Yes


def _keep_test_split(dataset):
    # The PQA-L release marks the official 500-question test set with `split`; the public
    # `pqa_labeled` config has no such column, and then every record is kept.
    if "split" in dataset.column_names:
        return dataset.filter(lambda doc: doc["split"] == "test")
    return dataset


def process_pubmed_qa(dataset):
    """Join the abstract's sections into `abstract` and add the gold choice index as `label`."""
    dataset = _keep_test_split(dataset)

    def _add(doc):
        return {
            "abstract": " ".join(part.strip() for part in doc["context"]["contexts"]),
            "label": PUBMED_QA_LABELS.index(doc["final_decision"].strip().lower()),
        }

    return dataset.map(_add)


def process_privacy_qa(dataset):
    """`answer` Relevant/Irrelevant -> `label` 1/0."""
    return dataset.map(lambda doc: {"label": PRIVACY_QA_LABELS.index(doc["answer"].strip())})


def process_contract_nli(dataset):
    """Labels are already 0 contradiction, 1 entailment, 2 not mentioned; only normalise spacing."""
    return dataset.map(lambda doc: {"premise": doc["premise"].strip(), "hypothesis": doc["hypothesis"].strip()})


def process_vitaminc(dataset):
    """Map VitaminC to the NLI layout: evidence -> premise, claim -> hypothesis, label -> 0/1/2."""
    return dataset.map(lambda doc: {
        "premise": doc["evidence"].strip(),
        "hypothesis": doc["claim"].strip(),
        "label_index": VITAMINC_LABELS.index(doc["label"].strip().upper()),
    })


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


def squad_gold_answers(doc) -> list[str]:
    return list(doc["answers"]["text"])


def process_squad_results(doc, results) -> dict[str, float]:
    """Best EM and F1 of the generation against any gold answer (SQuAD's rule), in 0..1."""
    prediction = results[0].strip()
    golds = squad_gold_answers(doc) or [""]
    return {
        "exact_match": max(squad_exact_match(prediction, gold) for gold in golds),
        "f1": max(squad_f1(prediction, gold) for gold in golds),
    }
