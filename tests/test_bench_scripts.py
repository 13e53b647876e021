"""Benchmark scripts: a smoke run of scripts/bench_eval.py on the tiny random model (no timing checks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH_EVAL = ROOT / "scripts" / "bench_eval.py"

# Made-up PubMedQA records in the public PQA-L field layout (what the pubmed_qa tasks read).
RECORDS = [
    {"pubid": 1, "question": "Does daily walking lower blood pressure?", "split": "test",
     "context": {"contexts": ["Adults who walked 30 minutes a day.", "Systolic pressure fell by 8 mmHg."],
                 "labels": ["METHODS", "RESULTS"], "meshes": []},
     "long_answer": "Yes.", "final_decision": "yes"},
    {"pubid": 2, "question": "Is vitamin D linked to fewer colds?", "split": "test",
     "context": {"contexts": ["Vitamin D did not change the number of colds."], "labels": ["RESULTS"], "meshes": []},
     "long_answer": "No.", "final_decision": "no"},
    {"pubid": 3, "question": "Do night shifts raise the risk of diabetes?", "split": "test",
     "context": {"contexts": ["The association was weak after adjustment."], "labels": ["RESULTS"], "meshes": []},
     "long_answer": "Unclear.", "final_decision": "maybe"},
    {"pubid": 4, "question": "Is this a training record?", "split": "train",  # dropped: not the test split
     "context": {"contexts": ["Not scored."], "labels": ["RESULTS"], "meshes": []},
     "long_answer": "No.", "final_decision": "no"},
]
TEST_RECORDS = 3


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_eval_agreement_counts_same_choices():
    bench = load_script(BENCH_EVAL)
    a = [{"template": "t", "doc_id": i, "prediction": p, "loglikelihoods": [0.0, -1.0]} for i, p in enumerate([0, 1])]
    b = [{"template": "t", "doc_id": i, "prediction": p, "loglikelihoods": [0.0, -1.5]} for i, p in enumerate([0, 0])]
    assert bench.agreement(a, b) == {"compared": 2, "only_lm_eval": 0, "only_per_choice": 0,
                                     "identical_predictions": 0.5, "max_abs_loglikelihood_diff": 0.5}


def test_bench_eval_smoke_both_paths_agree(tiny_model_dir, tmp_path):
    pytest.importorskip("lm_eval")
    data = tmp_path / "pubmed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH_EVAL), "--model", str(tiny_model_dir), "--data-file", str(data),
               "--task", "pubmed_qa", "--limit", "5", "--warmup", "0", "--threads", "1", "--device", "cpu",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lm-eval / per-choice:" in done.stdout

    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"lm-eval", "per-choice"}
    expected = {(template, doc_id) for template in ("pubmed_qa_abstract_question", "pubmed_qa_based_on_abstract",
                                                    "pubmed_qa_read_and_answer", "pubmed_qa_given_context",
                                                    "pubmed_qa_question_first")
                for doc_id in range(TEST_RECORDS)}  # --limit 5 > 3 test-split records: all of them
    for path, result in results.items():
        assert "error" not in result, (path, result)
        keys = {(p["template"], p["doc_id"]) for p in result["predictions"]}
        assert keys == expected and len(result["predictions"]) == len(expected), path
        assert all(isinstance(p["prediction"], int) and 0 <= p["prediction"] < 3 for p in result["predictions"])
        assert result["examples"] == len(expected) and result["examples_per_s"] > 0
    # per-choice runs one forward per (example, choice)
    assert results["per-choice"]["forwards"] == 3 * len(expected)

    comparison = report["comparison"]
    assert comparison["compared"] == len(expected)
    assert comparison["identical_predictions"] == 1.0
    assert comparison["acc_equal"] and comparison["acc_lm_eval"] == pytest.approx(comparison["acc_per_choice"])
    assert comparison["max_abs_loglikelihood_diff"] < 1e-3
