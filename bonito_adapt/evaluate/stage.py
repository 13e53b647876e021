"""Stage `evaluate`: score the base and the adapted model with lm-eval, as the paper does.

Each (model, task) pair is one `lm_eval.simple_evaluate` call. Its summary, lm-eval's raw
results and the per-sample predictions are written under `evaluate/` as soon as the pair
finishes, so a killed run resumes with the pairs still missing. Layout::

    evaluate/results.json                     summary of every model and task (see `results_summary`)
    evaluate/samples/<model>/<task>.jsonl     one line per (template, example): prompt, choices, scores, prediction
    evaluate/raw/<model>/<task>.json          lm-eval's own results dict (config, versions, n-samples ...)
    evaluate/done/<model>/<task>.json         finished-pair marker: the pair's key and its summary
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._schema import split_settings
from ..benchmarks import benchmark
from ..distributed import process_state
from ..errors import UserError
from ..rundir import StageRun, atomic_write_json, config_hash, hash_files
from .models import adapter_fingerprint, build_lm, device_and_dtype, model_specs, release_lm
from .protocol import resolve_wrapper, task_protocol
from .results import results_summary, write_samples
from .tasks import data_file_overrides, load_task_objects, task_manager

if TYPE_CHECKING:
    from ..config import Recipe

__all__ = ["run"]


def _check_config(recipe: Recipe) -> None:
    cfg = recipe.evaluate
    for task in cfg.data_files:
        if task not in cfg.tasks:
            raise UserError(f"evaluate.data_files: {task!r} is not in evaluate.tasks ({', '.join(cfg.tasks)}); "
                            "add it there or remove the file")
        data_file_overrides(cfg.data_files[task], task)


def run(recipe: Recipe, run_dir: Path, force: bool = False) -> Path:
    """Evaluate every model of `evaluate.models` on every task of `evaluate.tasks`; return run_dir/evaluate.

    Under `accelerate launch` / torchrun every process runs each (model, task) pair's share of the
    requests (lm-eval splits them by rank and gathers the results on rank 0); only rank 0 writes.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = recipe.evaluate
    if cfg is None:
        raise UserError("the recipe has no `evaluate` section; add one with `tasks: [...]`")
    run_dir = Path(run_dir)
    _check_config(recipe)
    specs = model_specs(recipe, run_dir)
    state = process_state()
    main = state.is_main_process
    console = Console(stderr=True, quiet=not main)

    inputs: dict[str, str] = {f"data:{task}": hash_files([path]) for task, path in sorted(cfg.data_files.items())}
    for spec in specs:
        if spec["adapter"]:
            inputs["adapter"] = adapter_fingerprint(spec["adapter"], run_dir)
    results_settings, execution = split_settings(cfg)
    stage_config = {"evaluate": results_settings,
                    "models": [{k: v for k, v in s.items() if k != "adapter"} for s in specs]}
    stage = StageRun(run_dir, "evaluate", config=stage_config, inputs=inputs, execution={"evaluate": execution})
    if stage.is_current() and not force:
        console.print(f"evaluate: skipped (up to date) — {stage.dir / 'results.json'}")
        return stage.dir
    manager = task_manager(cfg.tasks)  # an unknown task fails here, before the stage folder is touched

    device, dtype = device_and_dtype(cfg.dtype)
    out = stage.dir
    # Which pairs are finished is decided by every process before rank 0 writes anything.
    pairs = []
    for spec in specs:
        for task in cfg.tasks:
            scoring = _scoring(cfg, spec, task)
            key = config_hash({"model": {k: v for k, v in spec.items() if k != "adapter"},
                               "adapter": inputs.get("adapter") if spec["adapter"] else None,
                               "task": task, "data": inputs.get(f"data:{task}"),
                               "dtype": dtype, "limit": cfg.limit, "seed": cfg.seed,
                               **{k: v for k, v in scoring.items() if k != "overrides"},
                               "overrides": sorted(scoring["overrides"])})
            marker = out / "done" / spec["name"] / f"{task}.json"
            done = json.loads(marker.read_text()) if marker.is_file() else None
            pairs.append((spec, task, scoring, key, marker,
                          done if done and done.get("key") == key and not force else None))
    state.wait_for_everyone()
    if main:
        stage.start()

    summary: dict[str, dict[str, Any]] = {spec["name"]: {} for spec in specs}
    examples = 0
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with Progress(TextColumn("[bold]evaluate[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not main) as progress:
        bar = progress.add_task("", total=len(pairs))
        lm, lm_of = None, None
        for spec, task, scoring, key, marker, done in pairs:
            progress.update(bar, description=f"{spec['name']} / {task}")
            if done:
                summary[spec["name"]][task] = done["summary"]
                progress.advance(bar)
                continue
            if lm_of is not spec:
                release_lm(lm)  # the previous model's memory goes before the next one loads
                lm = None
                _empty_cuda_cache()
                lm, lm_of = build_lm(spec, cfg, device, dtype), spec
            raw = _evaluate_one(lm, manager, task, cfg, scoring)
            if main:  # lm-eval returns the gathered results on rank 0 only
                samples = raw.pop("samples", {}) or {}
                examples += write_samples(out / "samples" / spec["name"] / f"{task}.jsonl", samples)
                atomic_write_json(out / "raw" / spec["name"] / f"{task}.json", raw)
                task_summary = {**results_summary(raw, task), "protocol": scoring["protocol"],
                                "prompt_format": scoring["wrapper"], "squad_gold": scoring["squad_gold"]}
                atomic_write_json(marker, {"key": key, "summary": task_summary})
                summary[spec["name"]][task] = task_summary
            progress.advance(bar)
        release_lm(lm)
        del lm
    _empty_cuda_cache()

    if not main:
        state.wait_for_everyone()  # until rank 0 has written the results
        return out
    from importlib import metadata

    results = {
        "models": summary,
        "config": {**cfg.model_dump(mode="json"), "models": [{k: v for k, v in s.items()} for s in specs],
                   "device": device, "dtype": dtype, "lm_eval": metadata.version("lm-eval"),
                   "processes": state.num_processes},
        "scale": "metrics are fractions in [0, 1]; f1 is macro-F1 (classification) or SQuAD token F1",
    }
    atomic_write_json(out / "results.json", results)
    stage.finish(counts={"models": len(specs), "tasks": len(cfg.tasks), "sample_lines": examples},
                 outputs={"results": "results.json", "samples": "samples/", "raw": "raw/"})
    console.print(f"evaluate: wrote {out / 'results.json'}")
    state.wait_for_everyone()
    return out


def _empty_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _scoring(cfg, spec: dict[str, Any], task: str) -> dict[str, Any]:
    """How one model is scored on one task: protocol, wrapper, and the task settings that follow from them."""
    protocol = task_protocol(cfg.protocol, task)
    wrapper = resolve_wrapper(spec["prompt_format"], protocol, spec["model"], spec["adapter"])
    overrides: dict[str, Any] = {}
    squad_gold = None
    entry = benchmark(task)
    if entry is not None and entry.scoring == "generate":
        # The shipped SQuADShifts YAMLs are the paper's (25 tokens, no stop, the first gold answer).
        squad_gold = cfg.squad_gold if cfg.squad_gold != "auto" else ("first" if protocol == "paper" else "all")
        if protocol == "lm_eval":
            overrides["generation_kwargs"] = {"until": ["\n"], "do_sample": False, "max_gen_toks": 48}
        if squad_gold == "all":
            from .tasks import utils

            overrides["process_results"] = utils.squad_any_answer
    return {"protocol": protocol, "wrapper": wrapper, "squad_gold": squad_gold, "overrides": overrides}


def _evaluate_one(lm, manager, task: str, cfg, scoring: dict[str, Any]) -> dict[str, Any] | None:
    """lm-eval's results of one (model, task) pair; None on processes other than rank 0."""
    import lm_eval

    task_object = load_task_objects(manager, task, cfg.data_files.get(task), scoring["overrides"])
    lm.use(scoring["protocol"], scoring["wrapper"])
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_object],
        task_manager=manager,
        limit=cfg.limit,
        log_samples=True,
        apply_chat_template=lm.wraps_prompts,
        fewshot_as_multiturn=False,
        bootstrap_iters=0,  # no stderr: bootstrapping a custom aggregation (macro-F1) is slow
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    return raw
