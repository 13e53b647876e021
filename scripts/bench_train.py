"""Benchmark: the train stage vs the paper's Q-LoRA recipe (`reference_qlora.py`), side by side.

Both train the same random-init model folder on the same examples (the yardstick's own
`make_examples`: Bonito-like prompt/target lengths, same --seed, same order) with the same
hyperparameters and 16 examples per optimizer step. Each variant runs in its own process, one
after the other, so each gets an empty GPU. Prints one JSON line per variant and a table, and
writes everything to --out.

    python scripts/random_model.py ...      # see ../shared/bench/README.md
    python scripts/bench_train.py --model /tmp/mistral-7b-random --yardsticks ../shared/bench \\
        --steps 6 --out docs/bench/train.json

Variants (`--variants`, comma-separated names from VARIANTS below) are train-stage settings
(recipe `train:` keys). Throughput is measured like the yardstick: tokens between the end of
the first optimizer step and the end of the last, over that wall time. The first step's loss
is the same computation in every variant (LoRA B starts at zero, so it is the base model's
loss on the same 16 examples): it checks that a faster variant still computes the same thing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_bench.py, also when loaded by path
from _bench import run_worker  # noqa: E402

# name -> train-stage settings on top of the recipe defaults (the Bonito card's hyperparameters)
VARIANTS: dict[str, dict] = {
    # what a recipe gets: padding-free, micro-batch auto (16), attention and Liger auto, gradient_checkpointing
    # auto (the memory plan: as few layers checkpointed as the GPU's free memory needs)
    "defaults": {},
    "max-memory-20": {"max_memory_gib": 20},  # the plan under a 24 GB card's budget
    "checkpoint-all": {"gradient_checkpointing": True},  # the defaults before the memory plan
    "checkpoint-none": {"gradient_checkpointing": False},
    "varlen-mb4-liger": {"micro_batch_size": 4, "attn_implementation": "varlen", "use_liger_kernel": True},
    "padded-mb4": {"padding_free": False, "attn_implementation": "sdpa", "use_liger_kernel": False},
    "sdpa-mb16": {"micro_batch_size": 16, "attn_implementation": "sdpa", "use_liger_kernel": False},
    "varlen-mb4": {"attn_implementation": "varlen", "use_liger_kernel": False},
    "varlen-mb16": {"micro_batch_size": 16, "attn_implementation": "varlen", "use_liger_kernel": False},
    "varlen-mb16-liger": {"micro_batch_size": 16, "attn_implementation": "varlen", "use_liger_kernel": True},
    "varlen-mb16-liger-nockpt": {"micro_batch_size": 16, "attn_implementation": "varlen", "use_liger_kernel": True,
                                 "gradient_checkpointing": False},
}
BF16_DENSE_TFLOPS = 989.0  # H100 SXM datasheet, dense bf16; the H200 has the same compute


def flops_per_token(result: dict, settings: dict, params: int) -> float:
    """Model FLOPs per trained token of Q-LoRA: forward 2P + input-gradient backward 2P (the 4-bit base has no
    weight gradients) + 2P again for each recomputed (checkpointed) layer. Attention's own FLOPs are left out."""
    plan = result.get("memory_plan")
    if plan:
        checkpointed = plan["checkpointed"] / plan["layers"]
    else:  # the paper's recipe checkpoints every layer; so do the fixed settings other than `False`
        checkpointed = 0.0 if settings.get("gradient_checkpointing") is False else 1.0
    return (4 + 2 * checkpointed) * params


def _load_yardstick(yardsticks: Path):
    spec = importlib.util.spec_from_file_location("reference_qlora", yardsticks / "reference_qlora.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count_params(model_dir: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


# kernel name patterns -> where a step's GPU time goes (--profile)
KERNEL_KINDS = (
    ("4-bit dequantisation", ("dequant",)),
    ("attention", ("flash", "fmha", "attention", "varlen")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "splitk")),
    ("loss", ("cross_entropy", "fused_linear", "log_softmax", "nll")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "optimizer")),
    ("norms, rope, activations (Liger)", ("rms", "rope", "swiglu", "geglu", "liger", "_triton")),
    ("elementwise and copies", ("elementwise", "vectorized", "copy", "reduce", "fill", "cat", "index")),
)


def profile_step(trainer, step: int) -> dict:
    """GPU time of one optimizer step (`step`, after warm-up) by kernel kind, and the matmul time split into
    LoRA (an operand with the LoRA rank as a dimension) and the rest (base weights, dequantised). The dict
    fills in when training ends: summarising the trace takes seconds, which must not land inside a timed
    step (run_ours also leaves the profiled step itself out of the throughput)."""
    import torch
    from transformers import TrainerCallback

    rank = trainer.model.peft_config["default"].r
    found: dict = {}

    class Profile(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                torch.cuda.synchronize()
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                                   torch.profiler.ProfilerActivity.CPU],
                                                       record_shapes=True)
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step and hasattr(self, "profiler"):
                torch.cuda.synchronize()
                self.profiler.__exit__(None, None, None)

        def on_train_end(self, args, state, control, **kwargs):
            if hasattr(self, "profiler"):
                found.update(_summarise(self.profiler, rank))

    trainer.add_callback(Profile())
    return found


def _summarise(profiler, rank: int) -> dict:
    kinds: dict[str, float] = {}
    total = 0.0
    for event in profiler.key_averages():
        if event.device_type.name != "CUDA" or not event.self_device_time_total:
            continue
        name, us = event.key.lower(), event.self_device_time_total
        total += us
        kind = next((k for k, patterns in KERNEL_KINDS if any(p in name for p in patterns)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us
    lora = base = 0.0
    for event in profiler.key_averages(group_by_input_shape=True):
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul") and event.device_time_total:
            shapes = [dim for shape in (event.input_shapes or []) for dim in (shape or [])]
            if rank in shapes:
                lora += event.device_time_total
            elif event.key != "aten::matmul":
                base += event.device_time_total
    return {"gpu_ms": round(total / 1000, 1),
            "share": {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "lora_matmul_ms": round(lora / 1000, 1), "other_matmul_ms": round(base / 1000, 1)}


def run_ours(args, settings: dict) -> dict:
    """One variant of our train stage (called in a child process)."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, TrainerCallback

    from bonito_adapt.train.config import TrainConfig
    from bonito_adapt.train.trainer import build_trainer, memory_plan, resolve_setup

    reference = _load_yardstick(Path(args.yardsticks))
    vocab = AutoConfig.from_pretrained(args.model).vocab_size
    examples = reference.make_examples(args.steps * 16, vocab, args.seed)
    dataset = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    cuda = torch.cuda.is_available()
    base = {"model": args.model, "max_steps": args.steps, "seed": args.seed, "save_steps": 10**6,
            "logging_steps": 1, "lora": {"alpha": args.lora_alpha}}
    if not cuda:  # smoke runs on a CPU: no 4-bit, no paged optimizer
        base.update(quantization="none", optimizer="adamw_torch")
    config = TrainConfig(**{**base, **settings})
    setup = resolve_setup(config, cuda=cuda, world_size=1)
    marks, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), state.num_input_tokens_seen))

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, setup, dataset, Path(tmp), callbacks=[Clock()], max_steps=args.steps)
        # the last step is the profiled one: the throughput window (first step's end to the last timed step's
        # end) then stays contiguous and free of the profiler's overhead
        profiled = args.steps if args.profile and cuda and args.steps >= 3 else None
        profile = profile_step(trainer, profiled) if profiled else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        plan = memory_plan(trainer)
    (t0, k0), (t1, k1) = marks[0], marks[-2] if profiled else marks[-1]
    timed_steps = (len(marks) - 2) if profiled else (len(marks) - 1)
    return {
        "tokens_per_s": round((k1 - k0) / (t1 - t0), 1),
        "s_per_step": round((t1 - t0) / timed_steps, 3),
        "timed_steps": timed_steps,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "losses": [round(x, 4) for x in losses],
        "memory_plan": {key: plan[key] for key in ("layers", "checkpointed", "tokens_per_forward", "budget_gib",
                                                    "estimated_peak_gib", "reason")} if plan else None,
        **({"profile": profile} if profile is not None else {}),
        "setup": {"attention": setup.attn_implementation, "micro_batch": setup.micro_batch_size,
                  "accumulation": setup.gradient_accumulation_steps, "liger": setup.use_liger_kernel,
                  "quantization": setup.quantization, "padding_free": config.padding_free},
    }


def run_reference(args) -> dict:
    """The yardstick, as shipped, in a child process; its Trainer logs give the per-step losses."""
    command = [sys.executable, str(Path(args.yardsticks) / "reference_qlora.py"), "--model", args.model,
               "--steps", str(args.steps), "--seed", str(args.seed), "--lora-alpha", str(args.lora_alpha),
               "--micro-batch", str(args.reference_micro_batch)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"reference failed:\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith('{"bench"')][-1])
    losses = [float(x) for x in re.findall(r"'loss': '?([0-9.]+)", done.stdout + done.stderr)]
    return {key: result[key] for key in ("tokens_per_s", "s_per_step", "peak_gib")} | {"losses": losses}


def _child(args, variant: str) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--yardsticks",
               args.yardsticks, "--steps", str(args.steps), "--seed", str(args.seed),
               "--lora-alpha", str(args.lora_alpha)] + (["--profile"] if args.profile else [])
    return run_worker(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="random-init model folder (../shared/bench/random_model.py)")
    parser.add_argument("--yardsticks", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-alpha", type=float, default=4.0, help="the Bonito card's alpha, for both sides")
    parser.add_argument("--reference-micro-batch", type=int, default=1, help="the paper's recipe: 1 (x16 accumulation)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile the last step of each variant (GPU time by kernel kind), left out of the throughput")
    parser.add_argument("--out", help="write all results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_ours(args, VARIANTS[args.worker])))
        return

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    params = _count_params(args.model)
    results = {}
    if not args.skip_reference:
        results["reference"] = run_reference(args)
        print(json.dumps({"variant": "reference", **results["reference"]}), flush=True)
    for variant in [v for v in args.variants.split(",") if v]:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        results[variant] = _child(args, variant)
        print(json.dumps({"variant": variant, **results[variant]}), flush=True)

    base = results.get("reference", {}).get("tokens_per_s")
    print(f"\n{'variant':<20} {'tokens/s':>9} {'x ref':>6} {'s/step':>7} {'peak GiB':>8} {'MFU':>6}  first losses")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<20} error: {r['error']}")
            continue
        mfu = r["tokens_per_s"] * flops_per_token(r, VARIANTS.get(name, {}), params) / (BF16_DENSE_TFLOPS * 1e12)
        r["mfu"], r["ratio_to_reference"] = round(mfu, 4), round(r["tokens_per_s"] / base, 2) if base else None
        print(f"{name:<20} {r['tokens_per_s']:>9.0f} {r['ratio_to_reference'] or 0:>6.2f} {r['s_per_step']:>7.2f} "
              f"{r['peak_gib'] or 0:>8.2f} {mfu:>6.1%}  {r['losses'][:3]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "bench": "train", "device": device, "model": args.model, "params": params, "steps": args.steps,
            "seed": args.seed, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
            "versions": _versions("torch", "transformers", "trl", "peft", "bitsandbytes", "liger-kernel"),
            "results": results}, indent=2) + "\n")


def _versions(*names: str) -> dict:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    main()
