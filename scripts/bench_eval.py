"""Benchmark: ranked (multiple-choice) evaluation through the evaluate stage vs one forward per choice.

Two ways to score the same examples of a shipped multiple-choice task with the same model:

- `lm-eval`: the evaluate stage's own path: `evaluate.task_manager` + `evaluate.load_task_objects`
  (the task's local data file, as `evaluate.data_files` does), the stage's `hf` model
  (`evaluate._build_lm`: batch size as the stage sets it, `auto` = lm-eval's detection on a GPU,
  8 on a CPU) and `evaluate._evaluate_one` (`lm_eval.simple_evaluate`, plain prompt format, as the
  stage scores the base model). lm-eval sorts requests by length, batches them, and scores all
  one-token answer choices of an example from a single forward pass (its logits cache).
- `per-choice`: the straightforward way (the paper's ranked evaluation, batch size 1): for each
  example and each answer choice, one forward pass of prompt + choice, the sum of the log-probs
  of the choice tokens (log-softmax in float32), the argmax over choices. Prompts, choices and
  tokenisation are built independently from the task's own `doc_to_text` / `doc_to_choice` /
  `target_delimiter` and lm-eval's pairing rule (trailing spaces of the prompt move to the choice;
  prompt + choice are tokenised together and split after the prompt's tokens).

Each path runs in its own process, one after the other (each gets an empty GPU), after a warm-up
on the first --warmup examples (the dataset cache, kernels). Reported per path: examples/s end
to end (the stage's whole `_evaluate_one` call: task build, requests, scoring, metrics; for
per-choice: doc build + scoring) and examples/s of scoring alone (lm-eval's `loglikelihood`
call; the forward loop), forward passes and sequences run, accuracy, peak GPU memory; then the
ratio lm-eval / per-choice and agreement: both accuracies and the fraction of (template,
example) pairs where the two pick the same choice (lm-eval's own per-sample output, read
through the stage's `_sample_record`), plus the largest difference of a choice's log-likelihood.
An "example" is one (template, document) pair: a group task (pubmed_qa) scores each document
once per template.

    # CPU run (SmolLM2-135M, 50 PubMedQA examples: ~4.5 minutes with --threads 1 on a busy 2-core
    # machine; with torch's default threads, other jobs on the same cores slow batch-1 forwards badly)
    python scripts/bench_eval.py --model models/SmolLM2-135M-Instruct --threads 1 \\
        --data-file ../shared/data/benchmarks/pubmed_qa.jsonl.gz --limit 50 --out /tmp/bench_eval_cpu.json

    # GPU (bf16, unchanged): a random-init model of the real architecture, see ../shared/bench/README.md
    # (the device machine has no lm-eval/datasets: carry the wheels from ../shared/bench/device_wheels.sh)
    python ../shared/bench/random_model.py mistral-7b /tmp/mistral-7b-random --device cuda
    python scripts/bench_eval.py --model /tmp/mistral-7b-random \\
        --data-file ../shared/data/benchmarks/pubmed_qa.jsonl.gz --limit 200 --out docs/bench/eval.json

Caveats for a random-init model: speed does not depend on weight values, but agreement does.
Random weights give nearly equal log-likelihoods to every choice, and lm-eval takes its
log-softmax in the model dtype (bf16 on a GPU) while per-choice uses float32, so near-ties can
flip and agreement below 1.0 there says nothing about correctness: check agreement on a real
model (the CPU run). The random model's tokenizer is not the real one (it is trained on
made-up words), so prompts take more tokens and " yes"/" no"/" maybe" may take several tokens
each, which disables lm-eval's one-forward-per-example sharing; the JSON records the token
counts (`tokens`) so the numbers can be read with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_bench.py, also when loaded by path
from _bench import run_worker  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local model folder and data file only
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATHS = ("lm-eval", "per-choice")
DEFAULT_TASK = "pubmed_qa_abstract_question"


def _device_and_dtype(args) -> tuple[str, str]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _batch_size(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _leaf_tasks(task_object) -> list:
    from lm_eval.api.group import Group

    return task_object.get_all_tasks() if isinstance(task_object, Group) else [task_object]


# --------------------------------------------------------------------------- lm-eval (the stage)

def run_lm_eval(args) -> dict:
    """The evaluate stage's scoring of the base model (called in a child process)."""
    import logging

    import torch

    from bonito_adapt.evaluate import stage, tasks
    from bonito_adapt.evaluate.config import EvaluateConfig
    from bonito_adapt.evaluate.models import build_lm
    from bonito_adapt.evaluate.results import results_summary, sample_record

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    device, dtype = _device_and_dtype(args)
    cfg = EvaluateConfig(tasks=[args.task], models=["base"], base_model=args.model, limit=args.limit,
                         batch_size=_batch_size(args.batch_size), dtype=dtype,
                         data_files={args.task: args.data_file})
    spec = {"name": "base", "model": args.model, "gguf_file": None, "adapter": None, "prompt_format": "plain"}
    manager = tasks.task_manager(cfg.tasks)
    lm = build_lm(spec, cfg, device, dtype)

    clock = {"scoring_s": 0.0, "forwards": 0, "sequences": 0, "padded_tokens": 0}
    loglikelihood, model_call = lm.loglikelihood, lm._model_call

    def timed_loglikelihood(requests, *a, **kw):
        _sync(device)
        start = time.perf_counter()
        out = loglikelihood(requests, *a, **kw)
        _sync(device)
        clock["scoring_s"] += time.perf_counter() - start
        return out

    def counted_model_call(inps, *a, **kw):
        clock["forwards"] += 1
        clock["sequences"] += int(inps.shape[0])
        clock["padded_tokens"] += int(inps.numel())
        return model_call(inps, *a, **kw)

    lm.loglikelihood, lm._model_call = timed_loglikelihood, counted_model_call
    if args.warmup:
        stage._evaluate_one(lm, manager, args.task, cfg.model_copy(update={"limit": args.warmup}), "plain")
    clock.update(scoring_s=0.0, forwards=0, sequences=0, padded_tokens=0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    raw = stage._evaluate_one(lm, manager, args.task, cfg, "plain")
    _sync(device)
    wall = time.perf_counter() - start

    records = [sample_record(template, sample)
               for template, items in sorted((raw.get("samples") or {}).items()) for sample in items]
    predictions = [{"template": r["template"], "doc_id": r["doc_id"], "target": r["target"],
                    "prediction": r.get("prediction"), "loglikelihoods": r.get("loglikelihoods")} for r in records]
    summary = results_summary(raw, args.task)
    return {
        "wall_s": round(wall, 3),
        "scoring_s": round(clock["scoring_s"], 3),
        "forwards": clock["forwards"],
        "sequences": clock["sequences"],
        "padded_tokens": clock["padded_tokens"],
        "batch_size": getattr(lm, "batch_sizes", None) or lm.batch_size,
        "acc": summary["average"].get("acc"),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        "device": device, "dtype": dtype,
        "predictions": predictions,
    }


# --------------------------------------------------------------------------- per choice (batch size 1)

def _examples(args, limit: int) -> list[dict]:
    """(template, doc_id, prompt, choices, target) for the first `limit` docs of every template."""
    from bonito_adapt.evaluate.tasks import load_task_objects, task_manager

    manager = task_manager([args.task])
    task_object = load_task_objects(manager, args.task, args.data_file)
    examples = []
    for task in _leaf_tasks(task_object):
        docs = task.eval_docs
        for doc_id in range(min(limit, len(docs))):
            doc = docs[doc_id]
            target = task.doc_to_target(doc)
            choices = task.doc_to_choice(doc)
            examples.append({"template": task.config.task, "doc_id": doc_id, "prompt": task.doc_to_text(doc),
                             "choices": [f"{task.config.target_delimiter}{c}" for c in choices],
                             "target": target if isinstance(target, int) else choices.index(target)})
    return examples


def _encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(prompt) - len(prompt.rstrip())
    if spaces:
        prompt, continuation = prompt[:-spaces], prompt[-spaces:] + continuation
    whole = tokenizer(prompt + continuation).input_ids
    context = tokenizer(prompt).input_ids
    return context, whole[len(context):]


def run_per_choice(args) -> dict:
    """One forward per (example, choice), batch size 1 (called in a child process)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = _device_and_dtype(args)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype)).to(device).eval()
    counts = {"forwards": 0, "tokens": 0, "prompt_tokens": 0, "choice_tokens": 0, "choices": 0}

    @torch.inference_mode()
    def score(example: dict) -> dict:
        loglikelihoods = []
        for choice in example["choices"]:
            context, continuation = _encode_pair(tokenizer, example["prompt"], choice)
            ids = torch.tensor([context + continuation], device=device)
            logits = model(input_ids=ids).logits[0, len(context) - 1:-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            target = torch.tensor(continuation, device=device)
            loglikelihoods.append(float(logprobs.gather(-1, target[:, None]).sum()))
            counts["forwards"] += 1
            counts["tokens"] += ids.shape[1]
            counts["prompt_tokens"] += len(context)
            counts["choice_tokens"] += len(continuation)
            counts["choices"] += 1
        best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        return {"template": example["template"], "doc_id": example["doc_id"], "target": example["target"],
                "prediction": best, "loglikelihoods": loglikelihoods}

    if args.warmup:
        for example in _examples(args, args.warmup):
            score(example)
    counts.update(dict.fromkeys(counts, 0))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    examples = _examples(args, args.limit)
    _sync(device)
    scoring_start = time.perf_counter()
    predictions = [score(example) for example in examples]
    _sync(device)
    end = time.perf_counter()
    return {
        "wall_s": round(end - start, 3),
        "scoring_s": round(end - scoring_start, 3),
        "forwards": counts["forwards"],
        "sequences": counts["forwards"],
        "padded_tokens": counts["tokens"],
        "batch_size": 1,
        "acc": sum(p["prediction"] == p["target"] for p in predictions) / len(predictions) if predictions else None,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        "device": device, "dtype": dtype,
        "tokens": {"mean_prompt": round(counts["prompt_tokens"] / max(counts["choices"], 1), 1),
                   "mean_choice": round(counts["choice_tokens"] / max(counts["choices"], 1), 2),
                   "choices_per_example": round(counts["choices"] / max(len(predictions), 1), 2)},
        "predictions": predictions,
    }


# --------------------------------------------------------------------------- driver

def _child(args, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--worker-out", str(out),
                   "--model", args.model, "--data-file", args.data_file, "--task", args.task,
                   "--limit", str(args.limit), "--warmup", str(args.warmup), "--device", args.device,
                   "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        return run_worker(command, result_file=out)


def agreement(a: list[dict], b: list[dict]) -> dict:
    """How often two prediction lists, keyed by (template, doc_id), pick the same choice."""
    left = {(p["template"], p["doc_id"]): p for p in a}
    right = {(p["template"], p["doc_id"]): p for p in b}
    common = sorted(left.keys() & right.keys())
    same = sum(left[k]["prediction"] == right[k]["prediction"] for k in common)
    diffs = [abs(x - y) for k in common if left[k]["loglikelihoods"] and right[k]["loglikelihoods"]
             for x, y in zip(left[k]["loglikelihoods"], right[k]["loglikelihoods"], strict=True)]
    return {"compared": len(common), "only_lm_eval": len(left.keys() - right.keys()),
            "only_per_choice": len(right.keys() - left.keys()),
            "identical_predictions": round(same / len(common), 4) if common else None,
            "max_abs_loglikelihood_diff": round(max(diffs), 6) if diffs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model folder (real, or ../shared/bench/random_model.py)")
    parser.add_argument("--data-file", required=True, help="local .jsonl(.gz)/.parquet in the task's public field names")
    parser.add_argument("--task", default=DEFAULT_TASK, help="a shipped multiple-choice task or group (pubmed_qa)")
    parser.add_argument("--limit", type=int, default=50, help="examples (documents) per template")
    parser.add_argument("--warmup", type=int, default=2, help="documents scored once before timing (0: none)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="auto: the stage's rule, bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", default="auto", help="lm-eval path: auto (the stage's: lm-eval's detection "
                        "on a GPU, 8 on a CPU) or an integer; per-choice is always 1")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads in each path (0: torch's default); 1 is steadier on a busy machine")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated: {', '.join(PATHS)}")
    parser.add_argument("--out", help="write all results (with per-example predictions) as JSON here")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = run_lm_eval(args) if args.worker == "lm-eval" else run_per_choice(args)
        Path(args.worker_out).write_text(json.dumps(result))
        return

    results: dict[str, dict] = {}
    for path in [p for p in args.paths.split(",") if p]:
        if path not in PATHS:
            raise SystemExit(f"unknown path {path!r}; choose from {', '.join(PATHS)}")
        r = results[path] = _child(args, path)
        if "error" not in r:
            n = len(r["predictions"])
            r["examples"] = n
            r["examples_per_s"] = round(n / r["wall_s"], 3) if r["wall_s"] else None
            r["scoring_examples_per_s"] = round(n / r["scoring_s"], 3) if r["scoring_s"] else None
        print(json.dumps({"path": path, **{k: v for k, v in r.items() if k != "predictions"}}), flush=True)

    ours, theirs = results.get("lm-eval", {}), results.get("per-choice", {})
    comparison = None
    if ours.get("predictions") is not None and theirs.get("predictions") is not None:
        comparison = {
            "ratio_examples_per_s": round(ours["examples_per_s"] / theirs["examples_per_s"], 2),
            "ratio_scoring_examples_per_s": round(ours["scoring_examples_per_s"] / theirs["scoring_examples_per_s"], 2),
            "acc_lm_eval": ours["acc"], "acc_per_choice": theirs["acc"],
            **agreement(ours["predictions"], theirs["predictions"]),
        }
        comparison["acc_equal"] = (comparison["acc_lm_eval"] is not None and comparison["acc_per_choice"] is not None
                                   and abs(comparison["acc_lm_eval"] - comparison["acc_per_choice"]) < 1e-9)
        print(json.dumps({"comparison": comparison}), flush=True)

    print(f"\n{'path':<11} {'examples':>8} {'ex/s':>8} {'scoring ex/s':>12} {'wall s':>7} {'forwards':>8} "
          f"{'seqs':>6} {'batch':>8} {'acc':>6} {'peak GiB':>8}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<11} error: {r['error']}")
            continue
        print(f"{name:<11} {r['examples']:>8} {r['examples_per_s']:>8.2f} {r['scoring_examples_per_s']:>12.2f} "
              f"{r['wall_s']:>7.1f} {r['forwards']:>8} {r['sequences']:>6} {str(r['batch_size']):>8} "
              f"{r['acc'] if r['acc'] is not None else float('nan'):>6.3f} {r['peak_gib'] or 0:>8.2f}")
    if comparison:
        print(f"lm-eval / per-choice: {comparison['ratio_examples_per_s']}x end to end, "
              f"{comparison['ratio_scoring_examples_per_s']}x scoring; identical predictions "
              f"{comparison['identical_predictions']} of {comparison['compared']}, acc equal: {comparison['acc_equal']}, "
              f"max |d loglik| {comparison['max_abs_loglikelihood_diff']}")

    if args.out:
        from importlib import metadata

        import torch

        device, dtype = _device_and_dtype(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "bench": "eval", "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "dtype": dtype, "model": args.model, "data_file": args.data_file, "task": args.task, "limit": args.limit,
            "warmup": args.warmup, "batch_size": args.batch_size, "threads": args.threads,
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "lm_eval": metadata.version("lm-eval"),
            "comparison": comparison, "results": results}, indent=2) + "\n")
    if any("error" in r for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
