"""The generate stage's task filters on their own: near-duplicate removal, label balancing, failure reasons."""

from __future__ import annotations

from collections import Counter

import pytest

from bonito_adapt.generate.filters import answer_label, balance_labels, drop_near_duplicates, failure_reason

BASE = "Does the agreement require the receiving party to return all confidential materials within thirty days?"


def task(text: str, output: str = "Yes", task_type: str = "ynqa") -> dict:
    return {"input": text, "output": output, "task_type": task_type, "context": "c", "source_id": "d"}


def test_near_duplicates_drop_reworded_copies_and_keep_distinct_tasks():
    pytest.importorskip("datasketch")
    tasks = [task(BASE), task(BASE.replace("thirty", "30")), task(BASE + " Answer yes or no."),
             task("Is the employee allowed to work remotely after the probation period ends?"),
             task(BASE, output="No")]
    kept, dropped, stats = drop_near_duplicates(tasks, threshold=0.6, seed=1)
    assert kept == [tasks[0], tasks[3]]  # the same question with another answer counts as a duplicate too
    assert all(d["dropped_by"] == "near_duplicates" and d["duplicate_of"] == BASE[:200] for d in dropped)
    assert stats == {"threshold": 0.6, "dropped": len(dropped)} and len(kept) + len(dropped) == len(tasks)
    # a strict threshold keeps the reworded ones
    kept_strict, _, _ = drop_near_duplicates(tasks, threshold=0.99, seed=1)
    assert tasks[1] in kept_strict and tasks[2] in kept_strict


def test_balance_labels_to_a_ratio_and_only_for_closed_answer_types():
    tasks = [task(f"q{i}", "No") for i in range(9)] + [task(f"y{i}", "yes.") for i in range(3)] + \
            [task(f"free {i}", "a long answer", "qa") for i in range(4)]
    kept, dropped, stats = balance_labels(tasks, ratio=2.0, seed=0)
    assert Counter(answer_label(t["output"]) for t in kept if t["task_type"] == "ynqa") == {"no": 6, "yes": 3}
    assert sum(t["task_type"] == "qa" for t in kept) == 4  # open-answer tasks are never dropped
    assert stats["before"] == {"no": 9, "yes": 3} and stats["cap_per_answer"] == 6 and len(dropped) == 3
    assert balance_labels(tasks, ratio=2.0, seed=0)[0] == kept  # seeded


def test_failure_reasons_say_what_is_missing():
    assert failure_reason("") == "empty generation"
    assert failure_reason("Is it yes").startswith("no <|pipe|> separator")
    assert failure_reason("a<|pipe|>b<|pipe|>c") == "2 <|pipe|> separators (one expected)"
    assert failure_reason("<|pipe|>yes") == "empty input before the separator"
    assert failure_reason("question<|pipe|>  ") == "empty output after the separator"
