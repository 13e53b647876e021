"""Benchmark: the generation engines vs their yardsticks: the transformers engine vs plain `model.generate`
(`reference_generate.py`), and the generate stage on vLLM vs raw `vllm.LLM.generate` (`--vllm`).

Both run the same random-init model folder on the same prompts: the yardstick's random token ids
of Bonito-like length (~400 +- 150 tokens, same --seed), 256 new tokens each, sampling at the
Bonito card's temperature 0.5 / top_p 0.95, EOS ignored so every run does the same work.
The yardstick runs first in its own process, then each engine variant in its own.

    python scripts/bench_generate.py --model /tmp/llama-3.1-8b-random --yardsticks ../shared/bench \\
        --prompts 256 --variants compiled-b256,compiled-b128 --out docs/bench/generate.json

`--vllm CASES` (e.g. `256x1,1024x1,4096x1,256x4,1024x4`: prompts x n) runs, in one process on one
`vllm.LLM`, for each case: raw `LLM.generate` on the stage's Bonito prompts, then the generate stage's own
path on the same passages (`generate_shards`: prompts, shards of 256, parsing, atomic writes; several
shards per vLLM call, `vllm.prompts_per_call`), then the same with one shard per call (what the stage did
before). EOS is ignored on every path so all do the same work; tokens are counted from vLLM's outputs.

    python scripts/bench_generate.py --model /tmp/llama-3.1-8b-random --vllm 256x1,1024x1,4096x1,256x4,1024x4 \
        --out docs/bench/generate_vllm_h200.json

Reported: generated tokens/s (tokens actually returned / wall time, after a warm-up on 4 prompts;
the warm-up's own time, which holds torch.compile for the compiled variants, is `warmup_s`),
the ratio to the yardstick, peak GPU memory, and wall time per decode step if every prompt ran in
one batch (wall / new tokens), to set against the floor of ~5.3 ms per decode step of an 8B bf16
model (16 GB of weights read at ~3 TB/s).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_bench.py, also when loaded by path
from _bench import run_worker  # noqa: E402

VARIANTS: dict[str, dict] = {
    # the engine's default on a GPU: static KV cache, compiled decode step, grouped prefill
    "compiled-b64": {"compile_decode": True, "batch_size": 64},
    "compiled-b128": {"compile_decode": True, "batch_size": 128},
    "compiled-b256": {"compile_decode": True, "batch_size": 256},
    # the same, with decode attention over the whole static cache (SDPA) instead of only the blocks
    # each row attends to (FlexAttention): the A/B of decode_attention.FLEX_DECODE
    "compiled-b256-sdpa": {"compile_decode": True, "batch_size": 256, "flex_decode": False},
    # the same, with transformers' temperature and top-p warpers instead of NucleusWarper
    "compiled-b256-hf-top-p": {"compile_decode": True, "batch_size": 256, "nucleus_warper": False},
    # uncompiled: eager decode over transformers' dynamic cache
    "padded-b64": {"compile_decode": False, "batch_size": 64},
    "padded-b256": {"compile_decode": False, "batch_size": 256},
    "continuous": {"continuous_batching": True},  # transformers generate_batch (opt-in)
}


def make_prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    """The yardstick's prompts (reference_generate.py), token for token."""
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(int(min(1024, max(64, rng.gauss(400, 150)))))]
            for _ in range(n)]


def run_ours(args, settings: dict) -> dict:
    import torch
    from transformers import AutoConfig

    from bonito_adapt.engines.spec import EngineSpec, SamplingConfig
    from bonito_adapt.engines.transformers_engine import TransformersEngine, decode_attention, engine

    settings = dict(settings)
    decode_attention.FLEX_DECODE = settings.pop("flex_decode", True)
    nucleus_warper = settings.pop("nucleus_warper", True)
    if not nucleus_warper:
        engine.plain_sampling = lambda *a: False
    prompts = make_prompts(args.prompts, AutoConfig.from_pretrained(args.model).vocab_size, args.seed)
    spec = EngineSpec(model=args.model, transformers=settings)
    generator = TransformersEngine(spec)
    sampling = SamplingConfig(n=1, temperature=0.5, top_p=0.95, max_tokens=args.new_tokens, seed=args.seed)
    # Warm-up on 4 prompts, as the yardstick does; the 4 longest, so that a compiled decode step is
    # compiled here for the cache length of the timed run. Its time (compile included) is reported.
    longest = sorted(prompts, key=len, reverse=True)[:4]
    start = time.perf_counter()
    generator.generate_token_ids(longest, sampling, ignore_eos=True)
    torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    completions = generator.generate_token_ids(prompts, sampling, ignore_eos=True)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    generated = sum(len(c) for per_prompt in completions for c in per_prompt)
    return {"gen_tokens_per_s": round(generated / wall, 1), "generated_tokens": generated,
            "expected_tokens": args.prompts * args.new_tokens, "wall_s": round(wall, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "warmup_s": round(warmup, 1),
            "continuous_batching": generator.continuous_batching, "compile_decode": generator.compile_decode,
            "batch_size": spec.transformers.batch_size, "flex_decode": decode_attention.FLEX_DECODE,
            "nucleus_warper": nucleus_warper}


def run_reference(args) -> dict:
    command = [sys.executable, str(Path(args.yardsticks) / "reference_generate.py"), "--model", args.model,
               "--prompts", str(args.prompts), "--batch", str(args.reference_batch),
               "--new-tokens", str(args.new_tokens), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"reference failed:\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith('{"bench"')][-1])
    return {key: result[key] for key in ("gen_tokens_per_s", "wall_s", "peak_gib")}


def run_vllm(args) -> dict:
    """Raw vLLM vs the generate stage's path on one vLLM engine (see the module docstring)."""
    import tempfile

    from transformers import AutoTokenizer

    from bonito_adapt.engines import vllm_engine
    from bonito_adapt.engines.spec import EngineSpec, SamplingConfig
    from bonito_adapt.generate.corpus import Passage
    from bonito_adapt.generate.shards import generate_shards
    from bonito_adapt.generate.task_format import TaskFormat

    real_kwargs = vllm_engine.sampling_params_kwargs
    vllm_engine.sampling_params_kwargs = lambda s, keep=False: {**real_kwargs(s, keep), "ignore_eos": True}
    # Without this the path that runs second finds the first one's prompts in vLLM's prefix cache and skips
    # their prefill (the 2026-12-02 run had it on: docs/performance.md says what that did to the ratios).
    real_llm_kwargs = vllm_engine.llm_kwargs
    vllm_engine.llm_kwargs = lambda spec: {**real_llm_kwargs(spec), "enable_prefix_caching": args.prefix_caching}
    start = time.perf_counter()
    engine = vllm_engine.VLLMEngine(EngineSpec(model=args.model, dtype="bfloat16",
                                               vllm={"max_model_len": 2048, "prompts_per_call": args.prompts_per_call}))
    startup = time.perf_counter() - start
    counted = {"tokens": 0}
    real_generate = engine.llm.generate

    def counting_generate(*a, **kw):
        outputs = real_generate(*a, **kw)
        counted["tokens"] += sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return outputs

    engine.llm.generate = counting_generate
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task_format = TaskFormat("bonito", "nli")

    class OneShardPerCall:  # the engine without generate_many: the stage's path before shards went in together
        def __init__(self, inner):
            self.inner, self.name = inner, "vllm"

        def generate(self, prompts, sampling):
            return self.inner.generate(prompts, sampling)

        def count_tokens(self, text):
            return self.inner.count_tokens(text)

    # The warm-up holds as many prompts as the largest case (capped), so raw vLLM, which runs first, does not
    # meet large batch shapes for the first time inside its timed call (the 2026-12-04 run's 256-prompt case
    # had raw vLLM at 0.77 of the stage that ran after it).
    largest = max(int(case.split("x")[0]) * int(case.split("x")[1]) for case in args.vllm.split(","))
    warm = SamplingConfig(n=1, max_tokens=8, seed=args.seed)
    engine.generate([task_format.prompt(f"warm up {i}") for i in range(min(largest, 1024))], warm)

    def timed(run, *args, **kwargs) -> dict:
        """Wall time and generated tokens of `run(*args, **kwargs)` (one path on one case)."""
        counted["tokens"] = 0
        t0 = time.perf_counter()
        run(*args, **kwargs)
        wall = time.perf_counter() - t0
        return {"wall_s": round(wall, 2), "tokens": counted["tokens"], "gen_tokens_per_s": round(counted["tokens"] / wall, 1)}

    cases = []
    for case in args.vllm.split(","):
        size, n = (int(x) for x in case.split("x"))
        texts = [tokenizer.decode(ids) for ids in make_prompts(size, tokenizer.vocab_size, args.seed)]
        passages = [Passage(text, f"doc{i}") for i, text in enumerate(texts)]
        sampling = SamplingConfig(n=n, temperature=0.5, top_p=0.95, max_tokens=args.new_tokens, seed=args.seed)
        result = {"prompts": size, "n": n}
        params = engine._vllm.SamplingParams(**vllm_engine.sampling_params_kwargs(sampling))
        prompts = [task_format.prompt(t) for t in texts]
        first_raw = timed(engine.llm.generate, prompts, params, use_tqdm=False)
        paths = [("stage", engine)]
        if size * n <= args.one_shard_max:  # the slow path, at the sizes where it shows the drain
            paths.append(("stage_one_shard_per_call", OneShardPerCall(engine)))
        for name, used in paths:
            with tempfile.TemporaryDirectory() as shards:
                result[name] = timed(generate_shards, passages, used, task_format, sampling, Path(shards),
                                     args.shard_size)
        # raw vLLM again after the stage's paths: the ratios are taken against the faster of the two raw runs, so
        # neither running first nor second favours the stage
        result["raw_runs"] = [first_raw, timed(engine.llm.generate, prompts, params, use_tqdm=False)]
        result["raw"] = max(result["raw_runs"], key=lambda run: run["gen_tokens_per_s"])
        for name, _ in paths:
            result[name]["of_raw"] = round(result[name]["gen_tokens_per_s"] / result["raw"]["gen_tokens_per_s"], 3) \
                if result["raw"]["gen_tokens_per_s"] else None
        print(json.dumps(result), file=sys.stderr, flush=True)
        cases.append(result)
    engine.close()
    return {"startup_s": round(startup, 1), "shard_size": args.shard_size, "prompts_per_call": args.prompts_per_call,
            "cases": cases}


def _child(args, variant: str) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens), "--seed", str(args.seed)]
    return run_worker(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--yardsticks", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-batch", type=int, default=64)
    parser.add_argument("--variants", default="compiled-b256,compiled-b128", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--vllm", help="prompts x n cases for the vLLM comparison, e.g. 256x1,1024x4")
    parser.add_argument("--shard-size", type=int, default=256, help="--vllm: the stage's shard size")
    parser.add_argument("--prompts-per-call", type=int, default=4096, help="--vllm: vllm.prompts_per_call")
    parser.add_argument("--prefix-caching", action="store_true",
                        help="--vllm: keep vLLM's prefix cache on (the paths then share cached prompts)")
    parser.add_argument("--one-shard-max", type=int, default=1024,
                        help="--vllm: also time one shard per call for cases of at most this many prompts x n")
    parser.add_argument("--out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.vllm:
        from importlib import metadata

        import torch

        result = run_vllm(args)
        for case in result["cases"]:
            line = (f"{case['prompts']:>5} x n={case['n']}: raw {case['raw']['gen_tokens_per_s']:>8.0f} tok/s, stage "
                    f"{case['stage']['gen_tokens_per_s']:>8.0f} ({case['stage']['of_raw']:.0%})")
            if "stage_one_shard_per_call" in case:
                one = case["stage_one_shard_per_call"]
                line += f", one shard per call {one['gen_tokens_per_s']:>8.0f} ({one['of_raw']:.0%})"
            print(line)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({
                "bench": "generate_vllm", "device": torch.cuda.get_device_name(), "model": args.model,
                "new_tokens": args.new_tokens, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
                "torch": torch.__version__, "vllm": metadata.version("vllm"), "command": " ".join(sys.argv),
                **result}, indent=2) + "\n")
        return

    if args.worker:
        print(json.dumps(run_ours(args, VARIANTS[args.worker])))
        return

    import torch

    results = {}
    if not args.skip_reference:
        results["reference"] = run_reference(args)
        print(json.dumps({"variant": "reference", **results["reference"]}), flush=True)
    for variant in [v for v in args.variants.split(",") if v]:
        results[variant] = _child(args, variant)
        print(json.dumps({"variant": variant, **results[variant]}), flush=True)

    base = results.get("reference", {}).get("gen_tokens_per_s")
    print(f"\n{'variant':<14} {'gen tok/s':>10} {'x ref':>6} {'wall s':>7} {'ms/step*':>9} {'peak GiB':>8}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<14} error: {r['error']}")
            continue
        r["ratio_to_reference"] = round(r["gen_tokens_per_s"] / base, 2) if base else None
        r["ms_per_decode_step_all_at_once"] = round(1000 * r["wall_s"] / args.new_tokens, 1)
        print(f"{name:<14} {r['gen_tokens_per_s']:>10.0f} {r['ratio_to_reference'] or 0:>6.2f} {r['wall_s']:>7.1f} "
              f"{r['ms_per_decode_step_all_at_once']:>9.1f} {r['peak_gib']:>8.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "bench": "generate", "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "model": args.model, "prompts": args.prompts, "new_tokens": args.new_tokens, "seed": args.seed,
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
