"""Benchmark: ranked (multiple-choice) evaluation under the paper's protocol, three ways, same requests.

The same examples of a shipped multiple-choice task (`pubmed_qa`, `contract_nli`, ...: the paper's
templates, the `instruct` wrapper of a base model, each choice + EOS, tokenized apart from the source)
scored by the same model:

- `shared`: the evaluate stage as it runs (`evaluate.shared_context: true`, the default): the requests'
  token trie in packed rows, every shared token run once (an example's context for all its choices, a
  document for all the examples that start with it; bonito_adapt/evaluate/scoring.py), through
  `lm_eval.simple_evaluate`. `--shared-budgets` runs it again under other row / forward token budgets.
- `lm-eval`: the stage with `shared_context: false`: lm-eval's own HFLM batching, one sequence per
  (example, choice), sorted by length, batch size as the stage sets it.
- `paper`: the paper's evaluation code re-done by hand (evaluation/evaluate_decoder.py): batches of 8
  examples, each repeated once per choice, right-padded, one forward per batch, the summed
  log-probabilities of each choice's tokens (EOS included), argmax. Built independently of the stage
  from the task's `doc_to_text` / `doc_to_choice`.

Each path runs in its own process, one after the other, after a warm-up on the first --warmup
documents. Reported per path: examples/s end to end (the stage's whole `_evaluate_one`: task build,
requests, scoring, metrics; for `paper`: doc build + scoring), examples/s of scoring alone, forward
passes, sequences and tokens run (padding included), accuracy, peak GPU memory; then the ratios of
`shared` to the others and agreement (same pick per (template, example), largest log-likelihood
difference). An "example" is one (template, document) pair.

    # CPU (SmolLM2-135M, a real model: agreement means something)
    python scripts/bench_eval.py --model models/SmolLM2-135M-Instruct --threads 1 \\
        --data-file ../shared/data/benchmarks/pubmed_qa.jsonl.gz --limit 20 --out /tmp/bench_eval_cpu.json

    # GPU (bf16): a random-init model of the real architecture, see ../shared/bench/README.md
    python ../shared/bench/random_model.py mistral-7b /tmp/mistral-7b-random --device cuda
    python scripts/bench_eval.py --model /tmp/mistral-7b-random --task contract_nli \\
        --data-file ../shared/data/benchmarks/contract_nli_test.jsonl.gz --limit 40 --out docs/bench/eval.json

On a random-init model speed is real but agreement is not meaningful (near-equal log-likelihoods,
bf16 ties); check agreement on a real model.
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

PATHS = ("shared", "lm-eval", "paper")
DEFAULT_TASK = "pubmed_qa"
PAPER_BATCH = 8  # examples per forward in the paper's evaluation (HF's default per_device_eval_batch_size)


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


def _count_forwards(model, counts: dict) -> None:
    """Count forward passes, sequences and tokens (padding included) of `model`."""
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            counts["forwards"] += 1
            counts["sequences"] += int(ids.shape[0])
            counts["tokens"] += int(ids.numel())

    model.register_forward_pre_hook(hook, with_kwargs=True)


def _peak(device: str):
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


# --------------------------------------------------------------------------- the stage (shared / lm-eval)

def run_stage(args, shared_context: bool) -> dict:
    """The evaluate stage's scoring of the base model under the paper protocol (in a child process)."""
    import logging

    import torch

    from bonito_adapt.evaluate import scoring as scoring_module
    from bonito_adapt.evaluate import stage, tasks
    from bonito_adapt.evaluate.config import EvaluateConfig
    from bonito_adapt.evaluate.models import build_lm
    from bonito_adapt.evaluate.results import results_summary, sample_record

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    device, dtype = _device_and_dtype(args)
    cfg = EvaluateConfig(tasks=[args.task], models=["base"], base_model=args.model, limit=args.limit,
                         batch_size=_batch_size(args.batch_size), dtype=dtype, protocol="paper",
                         shared_context=shared_context, data_files={args.task: args.data_file})
    spec = {"name": "base", "model": args.model, "gguf_file": None, "adapter": None, "prompt_format": "auto"}
    scoring = stage._scoring(cfg, spec, args.task)
    manager = tasks.task_manager(cfg.tasks)
    lm = build_lm(spec, cfg, device, dtype)
    counts = {"forwards": 0, "sequences": 0, "tokens": 0}
    _count_forwards(lm.model, counts)
    clock = {"scoring_s": 0.0}
    loglikelihood = lm.loglikelihood

    def timed_loglikelihood(requests, *a, **kw):
        _sync(device)
        start = time.perf_counter()
        out = loglikelihood(requests, *a, **kw)
        _sync(device)
        clock["scoring_s"] += time.perf_counter() - start
        return out

    lm.loglikelihood = timed_loglikelihood
    if args.warmup:
        stage._evaluate_one(lm, manager, args.task, cfg.model_copy(update={"limit": args.warmup}), scoring)

    def timed_run() -> tuple[dict, float]:
        clock["scoring_s"] = 0.0
        counts.update(dict.fromkeys(counts, 0))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        start = time.perf_counter()
        raw = stage._evaluate_one(lm, manager, args.task, cfg, scoring)
        _sync(device)
        return raw, time.perf_counter() - start

    raw, wall = timed_run()
    measured = {"scoring_s": round(clock["scoring_s"], 3), **counts, "peak_gib": _peak(device)}
    budgets = []  # the shared path again under other token budgets (row:forward), on the same loaded model
    for budget in [b for b in (args.shared_budgets or "").split(",") if b] if shared_context else []:
        row_tokens, forward_tokens = (int(x) for x in budget.split(":"))
        defaults = scoring_module.ROW_TOKENS, scoring_module.AUTO_TOKENS_CUDA, scoring_module.AUTO_TOKENS_CPU
        scoring_module.ROW_TOKENS = row_tokens
        scoring_module.AUTO_TOKENS_CUDA = scoring_module.AUTO_TOKENS_CPU = forward_tokens
        try:
            _, variant_wall = timed_run()
        finally:
            scoring_module.ROW_TOKENS, scoring_module.AUTO_TOKENS_CUDA, scoring_module.AUTO_TOKENS_CPU = defaults
        budgets.append({"row_tokens": row_tokens, "forward_tokens": forward_tokens, "wall_s": round(variant_wall, 3),
                        "scoring_s": round(clock["scoring_s"], 3), **counts, "peak_gib": _peak(device)})

    records = [sample_record(template, sample)
               for template, items in sorted((raw.get("samples") or {}).items()) for sample in items]
    predictions = [{"template": r["template"], "doc_id": r["doc_id"], "target": r["target"],
                    "prediction": r.get("prediction"), "loglikelihoods": r.get("loglikelihoods")} for r in records]
    summary = results_summary(raw, args.task)
    return {"wall_s": round(wall, 3), **measured, "batch_size": str(cfg.batch_size),
            "acc": summary["average"].get("acc"), "device": device, "dtype": dtype, "budgets": budgets,
            "predictions": predictions}


# --------------------------------------------------------------------------- the paper's code, by hand

def _paper_examples(args, limit: int, tokenizer) -> list[dict]:
    """(template, doc_id, source ids, choice ids, target) for the first `limit` docs of every template,
    encoded as the paper's collator does: BOS text + `Instruct: {x}\\nAnswer:`, each choice stripped +
    EOS text, tokenized separately without special tokens, each cut to 1,024 tokens."""
    from bonito_adapt.evaluate.tasks import load_task_objects, task_manager

    manager = task_manager([args.task])
    task_object = load_task_objects(manager, args.task, args.data_file)
    examples = []
    for task in _leaf_tasks(task_object):
        docs = task.eval_docs
        for doc_id in range(min(limit, len(docs))):
            doc = docs[doc_id]
            source = tokenizer.bos_token + f"Instruct: {task.doc_to_text(doc).strip()}\nAnswer:"
            choices = [c.strip() + tokenizer.eos_token for c in task.doc_to_choice(doc)]
            examples.append({
                "template": task.config.task, "doc_id": doc_id, "target": task.doc_to_target(doc),
                "source": tokenizer(source, add_special_tokens=False)["input_ids"][:1024],
                "choices": [tokenizer(c, add_special_tokens=False)["input_ids"][:1024] for c in choices]})
    return examples


def run_paper(args) -> dict:
    """Batches of 8 examples x their choices, right-padded, one forward each (in a child process)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = _device_and_dtype(args)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype)).to(device).eval()
    counts = {"forwards": 0, "sequences": 0, "tokens": 0}
    _count_forwards(model, counts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.inference_mode()
    def score(batch: list[dict]) -> list[dict]:
        rows = [(e, j, e["source"] + c) for e in batch for j, c in enumerate(e["choices"])]
        width = max(len(ids) for _, _, ids in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (_, _, ids) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        scores: dict[int, list[float]] = {}
        for r, (example, _, ids) in enumerate(rows):
            start = len(example["source"])
            log_probs = torch.log_softmax(logits[r, start - 1: len(ids) - 1].float(), dim=-1)
            target = torch.tensor(ids[start:], device=log_probs.device)
            scores.setdefault(id(example), []).append(float(log_probs.gather(-1, target[:, None]).sum()))
        out = []
        for example in batch:
            lls = scores[id(example)]
            out.append({"template": example["template"], "doc_id": example["doc_id"], "target": example["target"],
                        "prediction": max(range(len(lls)), key=lls.__getitem__), "loglikelihoods": lls})
        return out

    def score_all(examples):
        return [p for i in range(0, len(examples), PAPER_BATCH) for p in score(examples[i:i + PAPER_BATCH])]

    if args.warmup:
        score_all(_paper_examples(args, args.warmup, tokenizer))
    counts.update(dict.fromkeys(counts, 0))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    examples = _paper_examples(args, args.limit, tokenizer)
    scoring_start = time.perf_counter()
    predictions = score_all(examples)
    _sync(device)
    end = time.perf_counter()
    choices = sum(len(e["choices"]) for e in examples)
    return {"wall_s": round(end - start, 3), "scoring_s": round(end - scoring_start, 3), **counts,
            "batch_size": f"{PAPER_BATCH} examples",
            "acc": sum(p["prediction"] == p["target"] for p in predictions) / len(predictions) if predictions else None,
            "peak_gib": _peak(device), "device": device, "dtype": dtype,
            "tokens_per_example": {"source": round(sum(len(e["source"]) for e in examples) / max(len(examples), 1), 1),
                                   "choice": round(sum(len(c) for e in examples for c in e["choices"]) / max(choices, 1), 2),
                                   "choices": round(choices / max(len(examples), 1), 2)},
            "predictions": predictions}


# --------------------------------------------------------------------------- driver

def _child(args, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--worker-out", str(out),
                   "--model", args.model, "--data-file", args.data_file, "--task", args.task,
                   "--limit", str(args.limit), "--warmup", str(args.warmup), "--device", args.device,
                   "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                   "--shared-budgets", args.shared_budgets or ""]
        return run_worker(command, result_file=out)


def agreement(a: list[dict], b: list[dict]) -> dict:
    """How often two prediction lists, keyed by (template, doc_id), pick the same choice."""
    left = {(p["template"], p["doc_id"]): p for p in a}
    right = {(p["template"], p["doc_id"]): p for p in b}
    common = sorted(left.keys() & right.keys())
    same = sum(left[k]["prediction"] == right[k]["prediction"] for k in common)
    diffs = [abs(x - y) for k in common if left[k]["loglikelihoods"] and right[k]["loglikelihoods"]
             for x, y in zip(left[k]["loglikelihoods"], right[k]["loglikelihoods"], strict=True)]
    return {"compared": len(common), "only_first": len(left.keys() - right.keys()),
            "only_second": len(right.keys() - left.keys()),
            "identical_predictions": round(same / len(common), 4) if common else None,
            "max_abs_loglikelihood_diff": round(max(diffs), 6) if diffs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model folder (real, or ../shared/bench/random_model.py)")
    parser.add_argument("--data-file", required=True, help="local .jsonl(.gz)/.parquet in the task's public field names")
    parser.add_argument("--task", default=DEFAULT_TASK, help="a paper benchmark (group) or one of its templates")
    parser.add_argument("--limit", type=int, default=50, help="examples (documents) per template")
    parser.add_argument("--warmup", type=int, default=2, help="documents scored once before timing (0: none)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="auto: the stage's rule, bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", default="auto", help="the stage's evaluate.batch_size (shared, lm-eval): "
                        "auto or an integer; paper is always 8 examples")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads in each path (0: torch's default); 1 is steadier on a busy machine")
    parser.add_argument("--shared-budgets", default="",
                        help="the shared path again under other auto budgets, on the same model: comma-separated "
                        "ROW_TOKENS:FORWARD_TOKENS (tokens per packed row : per forward), e.g. 1024:16384,4096:32768")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated: {', '.join(PATHS)}")
    parser.add_argument("--out", help="write all results (with per-example predictions) as JSON here")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = run_paper(args) if args.worker == "paper" else run_stage(args, shared_context=args.worker == "shared")
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

    comparisons = {}
    ours = results.get("shared", {})
    for other in ("lm-eval", "paper"):
        theirs = results.get(other, {})
        if ours.get("predictions") is None or theirs.get("predictions") is None:
            continue
        comparison = comparisons[f"shared/{other}"] = {
            "ratio_examples_per_s": round(ours["examples_per_s"] / theirs["examples_per_s"], 2),
            "ratio_scoring_examples_per_s": round(ours["scoring_examples_per_s"] / theirs["scoring_examples_per_s"], 2),
            "ratio_tokens": round(theirs["tokens"] / ours["tokens"], 2) if ours["tokens"] else None,
            "acc_shared": ours["acc"], f"acc_{other}": theirs["acc"],
            **agreement(ours["predictions"], theirs["predictions"]),
        }
        print(json.dumps({"comparison": f"shared/{other}", **comparison}), flush=True)

    print(f"\n{'path':<8} {'examples':>8} {'ex/s':>8} {'scoring ex/s':>12} {'wall s':>7} {'forwards':>8} "
          f"{'seqs':>6} {'tokens':>9} {'acc':>6} {'peak GiB':>8}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<8} error: {r['error']}")
            continue
        print(f"{name:<8} {r['examples']:>8} {r['examples_per_s']:>8.2f} {r['scoring_examples_per_s']:>12.2f} "
              f"{r['wall_s']:>7.1f} {r['forwards']:>8} {r['sequences']:>6} {r['tokens']:>9} "
              f"{r['acc'] if r['acc'] is not None else float('nan'):>6.3f} {r['peak_gib'] or 0:>8.2f}")
    for budget in results.get("shared", {}).get("budgets") or []:
        n = results["shared"]["examples"]
        print(f"shared, {budget['row_tokens']} tokens a row, {budget['forward_tokens']} a forward: "
              f"{n / budget['wall_s']:.2f} ex/s, {n / budget['scoring_s']:.2f} scoring ex/s, {budget['forwards']} forwards, "
              f"{budget['tokens']} tokens, {budget['peak_gib']} GiB")
    for name, c in comparisons.items():
        print(f"{name}: {c['ratio_examples_per_s']}x end to end, {c['ratio_scoring_examples_per_s']}x scoring, "
              f"{c['ratio_tokens']}x fewer tokens; same pick {c['identical_predictions']} of {c['compared']}, "
              f"max |d loglik| {c['max_abs_loglikelihood_diff']}")

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
            "command": " ".join(sys.argv), "transformers": metadata.version("transformers"),
            "comparisons": comparisons, "results": results}, indent=2) + "\n")
    if any("error" in r for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
