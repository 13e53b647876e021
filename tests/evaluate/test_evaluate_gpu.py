"""`evaluate.backend: vllm` against `hf` on a GPU (skipped elsewhere): the same picks on ranked choice (paper
protocol, EOS-terminated choices), the same SQuADShifts answers, base and adapted (LoRA through vLLM's
LoRA support), and each backend's examples/s.

    BONITO_ADAPT_GPU_SMALL_MODEL=/tmp/smollm2 BONITO_ADAPT_GPU_DATA=/path/to/benchmarks \\
    BONITO_ADAPT_GPU_OUT=$OUT python -m pytest -m gpu tests/evaluate/test_evaluate_gpu.py -s

`BONITO_ADAPT_GPU_DATA` holds pubmed_qa.jsonl.gz and squadshifts_amazon.jsonl.gz (../shared/data/benchmarks).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

MODEL = os.environ.get("BONITO_ADAPT_GPU_SMALL_MODEL")
DATA = os.environ.get("BONITO_ADAPT_GPU_DATA")
LIMIT = int(os.environ.get("BONITO_ADAPT_GPU_LIMIT", "40"))


def _samples(out: Path, model: str, task: str) -> dict:
    samples_file = out / "samples" / model / f"{task}.jsonl"
    rows = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
    return {(row["template"], row["doc_id"]): row for row in rows}


def test_vllm_backend_scores_like_hf(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("vllm")
    if not (MODEL and DATA):
        pytest.skip("set BONITO_ADAPT_GPU_SMALL_MODEL and BONITO_ADAPT_GPU_DATA")
    from _data import make_lora_adapter

    from bonito_adapt import evaluate
    from bonito_adapt.config import Recipe
    from bonito_adapt.evaluate.config import EvaluateConfig

    adapter = make_lora_adapter(Path(MODEL), tmp_path / "adapter", identity=False, std=0.02)
    tasks = {"pubmed_qa": f"{DATA}/pubmed_qa.jsonl.gz", "squadshifts_amazon": f"{DATA}/squadshifts_amazon.jsonl.gz"}
    outs, seconds = {}, {}
    for backend in ("hf", "vllm"):
        cfg = EvaluateConfig(tasks=list(tasks), base_model=MODEL, adapter=str(adapter), data_files=tasks,
                             limit=LIMIT, backend=backend, dtype="bfloat16")
        recipe = Recipe(name=backend, output_dir=str(tmp_path / backend), evaluate=cfg)
        start = time.perf_counter()
        outs[backend] = evaluate.run(recipe, recipe.run_dir)
        seconds[backend] = time.perf_counter() - start

    report: dict = {"limit": LIMIT, "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    for model in ("base", "adapted"):
        hf, vllm = _samples(outs["hf"], model, "pubmed_qa"), _samples(outs["vllm"], model, "pubmed_qa")
        assert hf.keys() == vllm.keys() and len(hf) == 5 * LIMIT
        for key in hf:  # the same strings were scored
            assert hf[key]["context"] == vllm[key]["context"] and hf[key]["continuations"] == vllm[key]["continuations"]
        same = sum(hf[k]["prediction"] == vllm[k]["prediction"] for k in hf) / len(hf)
        diff = max(abs(a - b) for k in hf for a, b in zip(hf[k]["loglikelihoods"], vllm[k]["loglikelihoods"], strict=True))
        squad_hf = _samples(outs["hf"], model, "squadshifts_amazon")
        squad_vllm = _samples(outs["vllm"], model, "squadshifts_amazon")
        squad_same = sum(squad_hf[k]["prediction"] == squad_vllm[k]["prediction"] for k in squad_hf) / len(squad_hf)
        report[model] = {"ranked_same_pick": round(same, 4), "ranked_max_abs_loglik_diff": round(diff, 4),
                         "squad_same_answer": round(squad_same, 4), "squad_examples": len(squad_hf)}
        for backend in ("hf", "vllm"):
            results = json.loads((outs[backend] / "results.json").read_text())["models"][model]
            report[model][f"{backend}_pubmed_f1"] = round(results["pubmed_qa"]["average"]["f1"], 4)
            report[model][f"{backend}_squad_f1"] = round(results["squadshifts_amazon"]["average"]["f1"], 4)
    examples = 2 * 5 * LIMIT * 2  # models x templates x documents x tasks
    report["examples_per_s"] = {k: round(examples / v, 2) for k, v in seconds.items()}
    print(json.dumps(report))
    if os.environ.get("BONITO_ADAPT_GPU_OUT"):
        Path(os.environ["BONITO_ADAPT_GPU_OUT"], "eval_vllm_vs_hf.json").write_text(json.dumps(report, indent=2))
    for model in ("base", "adapted"):
        assert report[model]["ranked_same_pick"] >= 0.9, report  # bf16 near-ties may flip, not more
        # Greedy generation diverges after the first near-tie (bf16, two kernels): compare the scores, which
        # must stay close, and require most answers identical (2026-12-02: 0.85 base, 0.62 adapted).
        assert report[model]["squad_same_answer"] >= 0.5, report
        assert abs(report[model]["hf_squad_f1"] - report[model]["vllm_squad_f1"]) <= 0.02, report
        assert abs(report[model]["hf_pubmed_f1"] - report[model]["vllm_pubmed_f1"]) <= 0.02, report
