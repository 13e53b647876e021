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
    assert bench.agreement(a, b) == {"compared": 2, "only_first": 0, "only_second": 0,
                                     "identical_predictions": 0.5, "max_abs_loglikelihood_diff": 0.5}


def test_bench_eval_smoke_three_paths_agree(tiny_model_dir, tmp_path):
    """The stage (shared context and lm-eval's per-choice batching) and the paper's code re-done by hand pick
    the same choices with the same log-likelihoods on the tiny model (fp32), and share-context runs fewer tokens."""
    pytest.importorskip("lm_eval")
    data = tmp_path / "pubmed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH_EVAL), "--model", str(tiny_model_dir), "--data-file", str(data),
               "--task", "pubmed_qa", "--limit", "5", "--warmup", "0", "--threads", "1", "--device", "cpu",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert "shared/paper:" in done.stdout

    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"shared", "lm-eval", "paper"}
    expected = {(f"pubmed_qa_{t}", doc_id) for t in ("given_a_passage_question_at_end", "im_a_doctor",
                                                     "what_is_the_answer", "please_answer",
                                                     "given_a_passage_question_at_start")
                for doc_id in range(TEST_RECORDS)}  # --limit 5 > 3 test-split records: all of them
    for path, result in results.items():
        assert "error" not in result, (path, result)
        keys = {(p["template"], p["doc_id"]) for p in result["predictions"]}
        assert keys == expected and len(result["predictions"]) == len(expected), path
        assert all(isinstance(p["prediction"], int) and 0 <= p["prediction"] < 3 for p in result["predictions"])
        assert result["examples"] == len(expected) and result["examples_per_s"] > 0
    # the paper's code: ceil(15 examples / 8) forwards of every (example, choice) sequence
    assert results["paper"]["forwards"] == 2 and results["paper"]["sequences"] == 3 * len(expected)
    assert results["lm-eval"]["sequences"] == 3 * len(expected)
    assert results["shared"]["sequences"] < len(expected)  # the examples packed into fewer rows
    for name in ("shared/lm-eval", "shared/paper"):
        comparison = report["comparisons"][name]
        assert comparison["compared"] == len(expected) and comparison["identical_predictions"] == 1.0
        assert comparison["max_abs_loglikelihood_diff"] < 1e-3
        assert comparison["ratio_tokens"] > 1


def test_bench_train_counts_recomputed_forwards_only_for_checkpointed_layers():
    """Q-LoRA FLOPs per token: 4 x params (forward + input-gradient backward), + 2 x params per recomputed layer."""
    bench_train = load_script(ROOT / "scripts" / "bench_train.py")
    params = 1000

    def plan(checkpointed: int) -> dict:
        return {"memory_plan": {"layers": 32, "checkpointed": checkpointed}}

    assert bench_train.flops_per_token(plan(0), {}, params) == 4000
    assert bench_train.flops_per_token(plan(32), {}, params) == 6000
    assert bench_train.flops_per_token(plan(16), {"max_memory_gib": 20}, params) == 5000
    assert bench_train.flops_per_token({}, {}, params) == 6000  # the paper's recipe: every layer
    assert bench_train.flops_per_token({"memory_plan": None}, {"gradient_checkpointing": True}, params) == 6000
    assert bench_train.flops_per_token({"memory_plan": None}, {"gradient_checkpointing": False}, params) == 4000


def test_bench_generate_vllm_path_runs_on_the_vllm_double(monkeypatch, tiny_model_dir):
    """The vLLM comparison (run only on a GPU machine) end to end on tests/_fake_vllm.py: raw vLLM before and after
    the stage's paths, the stage writing its shards, the ratios against the faster raw run. No timing asserted."""
    import argparse

    import _fake_vllm

    from bonito_adapt.engines import vllm_engine

    fake = _fake_vllm.install(monkeypatch)
    for name in ("sampling_params_kwargs", "llm_kwargs"):  # the script patches these: put them back afterwards
        monkeypatch.setattr(vllm_engine, name, getattr(vllm_engine, name))
    bench_generate = load_script(ROOT / "scripts" / "bench_generate.py")
    args = argparse.Namespace(model=str(tiny_model_dir), vllm="6x1,4x2", new_tokens=5, seed=0, shard_size=4,
                              prompts_per_call=8, prefix_caching=False, one_shard_max=8)
    result = bench_generate.run_vllm(args)
    assert fake.created[0]["enable_prefix_caching"] is False
    assert [(case["prompts"], case["n"]) for case in result["cases"]] == [(6, 1), (4, 2)]
    for case in result["cases"]:
        expected = case["prompts"] * case["n"] * 5
        assert len(case["raw_runs"]) == 2 and all(run["tokens"] == expected for run in case["raw_runs"])
        assert case["raw"] == max(case["raw_runs"], key=lambda run: run["gen_tokens_per_s"])
        for path in ("stage", "stage_one_shard_per_call"):
            assert case[path]["tokens"] == expected
            assert case[path]["of_raw"] == pytest.approx(
                case[path]["gen_tokens_per_s"] / case["raw"]["gen_tokens_per_s"], abs=1e-3)
    assert all(params.ignore_eos for call in fake.generate_calls[1:] for params in
               (call["sampling_params"] if isinstance(call["sampling_params"], list) else [call["sampling_params"]]))
    assert fake.shutdowns == ["engine_core"]
