"""Stage `evaluate`: score the base and the adapted model with lm-eval, as the paper does.

Each (model, task) pair is one `lm_eval.simple_evaluate` call. Its summary, lm-eval's raw
results and the per-sample predictions are written under `evaluate/` as soon as the pair
finishes, so a killed run resumes with the pairs still missing. Layout::

    evaluate/results.json                     summary of every model and task (see `results_summary`)
    evaluate/samples/<model>/<task>.jsonl     one line per (template, example): prompt, choices, scores, prediction
    evaluate/raw/<model>/<task>.json          lm-eval's own results dict (config, versions, n-samples ...)
    evaluate/done/<model>/<task>.json         finished-pair marker: the pair's key and its summary

Prompt formats: `plain` sends the template text as is; `chat` renders it as one user turn with
the tokenizer's chat template (lm-eval's `apply_chat_template`); `bonito` wraps it as the
adapted model was trained, `<|input|>\\n{prompt}\\n<|output|>\\n`. Bonito wrapping uses the same
lm-eval hook as chat: the model class's `apply_chat_template` is overridden to return
`prompts.training_prompt(prompt)`, so the answer choices follow the wrapped prompt directly
(no target delimiter), exactly as outputs follow `<|output|>\\n` in training.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

from .config import Recipe
from .errors import UserError, missing_extra
from .models import check_model_reference
from .prompts import training_prompt
from .rundir import (
    StageRun,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    hash_files,
    read_manifest,
)

__all__ = ["run", "TASKS_DIR", "task_manager", "load_task_objects", "results_summary", "wrap_lm_class"]

TASKS_DIR = Path(__file__).resolve().parent / "eval_tasks"
_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".parquet": "parquet"}
_CPU_BATCH_SIZE = 8  # lm-eval's "auto" probes 64 full-length sequences: far too slow on a CPU


# --------------------------------------------------------------------------- tasks

def task_manager(task_names: list[str]):
    """A TaskManager that knows the shipped tasks, plus lm-eval's own when a name needs them.

    Indexing lm-eval's ~15k built-in tasks takes seconds, so it happens only when a requested
    name is not one of ours. An unknown name is a one-line UserError with close matches.
    """
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise missing_extra("lm-eval", "eval") from None

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    if all(name in manager.all_tasks for name in task_names):
        return manager
    manager = TaskManager(include_path=str(TASKS_DIR))
    for name in task_names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "`lm_eval ls tasks` lists them"
            raise UserError(f"evaluate.tasks: unknown task {name!r}; shipped: pubmed_qa, privacy_qa, contract_nli, "
                            f"vitaminc, squadshifts_nyt/amazon/reddit, or any lm-eval task ({hint})")
    return manager


def _data_file_overrides(path: str, task: str) -> dict[str, Any]:
    file = Path(path)
    suffix = "".join(file.suffixes[-2:]) if file.name.endswith(".gz") else file.suffix
    builder = _LOCAL_FORMATS.get(suffix)
    if builder is None:
        raise UserError(f"evaluate.data_files.{task}: {path!r} is not .jsonl, .jsonl.gz, .json or .parquet; "
                        "convert it to one of those")
    if not file.is_file():
        raise UserError(f"evaluate.data_files.{task}: file {path!r} does not exist; fix the path")
    # All splits of a local file are called `test`, whatever the public dataset's split was.
    return {"dataset_path": builder, "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(file)}}, "test_split": "test"}


def load_task_objects(manager, name: str, data_file: str | None = None):
    """The lm-eval Task or Group `name`; with `data_file`, every task in it reads that local file instead."""
    try:
        if data_file is None:
            loaded = manager.load([name])
            return loaded["groups"].get(name) or loaded["tasks"][name]
        return _load_with_data_file(manager, name, data_file)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types (hub, network, parsing); all mean "no data"
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"evaluate: could not load the data of task {name!r} ({type(error).__name__}: {detail}); "
                        f"set evaluate.data_files.{name} to a local .jsonl(.gz)/.parquet file in the "
                        "public dataset's field names, or check network access") from None


def _load_with_data_file(manager, name: str, data_file: str):
    from lm_eval.api.group import Group
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    overrides = _data_file_overrides(data_file, name)

    def build(entry_name: str):
        entry = manager.task_index[entry_name]
        if entry.yaml_path is None:
            raise UserError(f"evaluate.data_files.{name}: {entry_name!r} is not defined by a YAML file; "
                            "local data files work only for YAML tasks")
        config = load_yaml(entry.yaml_path, resolve_func=True)
        if entry.kind is not Kind.GROUP:
            return manager.load([{**config, **overrides}])["tasks"][entry_name]
        group = Group.from_config({key: config[key] for key in ("group", "task", "aggregate_metric_list", "metadata")
                                   if key in config})
        for child in config["task"]:
            group.add(build(child if isinstance(child, str) else child["task"]))
        return group

    return build(name)


# --------------------------------------------------------------------------- models

def wrap_lm_class(lm_class, prompt_format: str):
    """`lm_class` itself, or for `bonito` a subclass whose chat hook produces the Bonito training prompt."""
    if prompt_format != "bonito":
        return lm_class

    class BonitoPromptLM(lm_class):
        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            # Zero-shot: one user turn (plus a system turn only if a description is set).
            return training_prompt("\n\n".join(message["content"] for message in chat_history))

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return training_prompt("{prompt}")

    BonitoPromptLM.__name__ = f"Bonito{lm_class.__name__}"
    return BonitoPromptLM


def _device_and_dtype(dtype: str) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def _build_lm(spec: dict[str, Any], cfg, device: str, dtype: str):
    prompt_format = spec["prompt_format"]
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError:
            raise missing_extra("vllm", "vllm") from None
        kwargs: dict[str, Any] = {"pretrained": spec["model"], "dtype": dtype, "batch_size": cfg.batch_size,
                                  "trust_remote_code": cfg.trust_remote_code, "seed": cfg.seed}
        if spec["adapter"]:
            rank = json.loads((Path(spec["adapter"]) / "adapter_config.json").read_text()).get("r", 16)
            kwargs.update(lora_local_path=spec["adapter"], max_lora_rank=rank)
        lm_class = wrap_lm_class(VLLM, prompt_format)
    else:
        from lm_eval.models.huggingface import HFLM

        batch_size = cfg.batch_size if device == "cuda" or cfg.batch_size != "auto" else _CPU_BATCH_SIZE
        kwargs = {"pretrained": spec["model"], "dtype": dtype, "device": device, "batch_size": batch_size,
                  "trust_remote_code": cfg.trust_remote_code}
        if spec["gguf_file"]:
            kwargs["gguf_file"] = spec["gguf_file"]
        if spec["adapter"]:
            kwargs["peft"] = spec["adapter"]
            if (Path(spec["adapter"]) / "tokenizer_config.json").is_file():
                kwargs["tokenizer"] = spec["adapter"]  # the train stage saves the tokenizer it trained with
        lm_class = wrap_lm_class(HFLM, prompt_format)
    try:
        lm = lm_class(**kwargs)
    except (OSError, ValueError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"evaluate: could not load the {spec['name']} model {spec['model']!r} ({detail}); "
                        "check evaluate.base_model / evaluate.adapter") from None
    if prompt_format == "chat" and not lm.chat_template(True):
        raise UserError(f"evaluate.prompt_format.{spec['name']}: chat, but {spec['model']!r} has no chat template; "
                        "use plain (base models) or bonito (adapted models)")
    return lm


def _model_specs(recipe: Recipe, run_dir: Path) -> list[dict[str, Any]]:
    cfg = recipe.evaluate
    train = recipe.train
    base_model = cfg.base_model or (train.model if train else None)
    if not base_model:
        raise UserError("evaluate.base_model is not set and the recipe has no train section; "
                        "set evaluate.base_model to a model folder or Hugging Face id")
    gguf_file = cfg.gguf_file or (train.gguf_file if train and not cfg.base_model else None)
    check_model_reference(base_model, "evaluate.base_model", gguf_file)
    specs = []
    for name in cfg.models:
        adapter = None
        if name == "adapted":
            adapter = cfg.adapter or str(run_dir / "train" / "adapter")
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise UserError(f"evaluate.models includes 'adapted' but {adapter!r} holds no PEFT adapter; "
                                "run the train stage first or set evaluate.adapter")
        default_format = "bonito" if name == "adapted" else "plain"
        specs.append({"name": name, "model": base_model, "gguf_file": gguf_file, "adapter": adapter,
                      "prompt_format": cfg.prompt_format.get(name, default_format)})
    return specs


def _adapter_fingerprint(adapter: str, run_dir: Path) -> str:
    if Path(adapter).resolve() == (run_dir / "train" / "adapter").resolve():
        manifest = read_manifest(run_dir / "train")
        if manifest:
            return manifest["fingerprint"]
    return hash_files(p for p in Path(adapter).iterdir() if p.is_file())


# --------------------------------------------------------------------------- results

def _metric_name(key: str) -> str | None:
    """lm-eval keys are `metric,filter`; keep `metric` (or `metric/filter`), drop stderr and aliases."""
    if "," not in key or "_stderr" in key:
        return None
    metric, filter_name = key.split(",", 1)
    return metric if filter_name == "none" else f"{metric}/{filter_name}"


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for key, value in entry.items()
            if (name := _metric_name(key)) and isinstance(value, (int, float))}


def results_summary(raw: dict[str, Any], task: str) -> dict[str, Any]:
    """Per-template metrics and their average for one requested task or group, from lm-eval's results.

    Returns `{"templates": {leaf task: {metric: value}}, "average": {metric: value}, "examples": n}`,
    values as fractions in [0, 1]. For a group, the average is lm-eval's group aggregate (the
    unweighted mean over templates for the shipped benchmarks); for a single task it equals the task.
    """
    results = raw["results"]
    leaves = [name for name in raw.get("group_subtasks", {}).get(task, []) if name in results] or [task]
    templates = {leaf: _metrics(results[leaf]) for leaf in leaves}
    average = _metrics(results.get(task, {})) if task in results and len(leaves) > 1 else {}
    if not average:
        names = sorted({metric for values in templates.values() for metric in values})
        average = {metric: sum(v[metric] for v in templates.values() if metric in v)
                   / sum(1 for v in templates.values() if metric in v) for metric in names}
    examples = {leaf: raw.get("n-samples", {}).get(leaf, {}).get("effective") for leaf in leaves}
    return {"templates": templates, "average": average, "examples": max((n for n in examples.values() if n), default=0)}


def _sample_record(template: str, sample: dict[str, Any]) -> dict[str, Any]:
    arguments = sample.get("arguments") or []
    record = {"template": template, "doc_id": sample.get("doc_id"), "target": sample.get("target")}
    if arguments:
        record["prompt"] = arguments[0][0]
    scores = sample.get("filtered_resps") or []
    if arguments and all(isinstance(s, (list, tuple)) and len(s) == 2 for s in scores) and len(arguments) == len(scores):
        # multiple choice: one (loglikelihood, is_greedy) per choice; the prediction is the argmax
        loglikelihoods = [float(s[0]) for s in scores]
        choices = [arg[1] for arg in arguments]
        best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        record.update(choices=choices, loglikelihoods=loglikelihoods, prediction=best,
                      prediction_text=choices[best])
    else:
        record["prediction"] = scores[0] if len(scores) == 1 else scores
    for key in ("acc", "exact_match", "f1"):
        if isinstance(sample.get(key), (int, float)):  # multiple choice keeps f1 as a (gold, pred) pair
            record[key] = float(sample[key])
    return record


def _write_samples(path: Path, samples: dict[str, list[dict[str, Any]]]) -> int:
    lines = [json.dumps(_sample_record(template, sample), default=str)
             for template, items in sorted(samples.items()) for sample in items]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


# --------------------------------------------------------------------------- stage

def _check_config(recipe: Recipe) -> None:
    cfg = recipe.evaluate
    for task in cfg.data_files:
        if task not in cfg.tasks:
            raise UserError(f"evaluate.data_files: {task!r} is not in evaluate.tasks ({', '.join(cfg.tasks)}); "
                            "add it there or remove the file")
        _data_file_overrides(cfg.data_files[task], task)


def run(recipe: Recipe, run_dir: Path, force: bool = False) -> Path:
    """Evaluate every model of `evaluate.models` on every task of `evaluate.tasks`; return run_dir/evaluate."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = recipe.evaluate
    if cfg is None:
        raise UserError("the recipe has no `evaluate` section; add one with `tasks: [...]`")
    console = Console(stderr=True)
    run_dir = Path(run_dir)
    _check_config(recipe)
    specs = _model_specs(recipe, run_dir)

    inputs: dict[str, str] = {f"data:{task}": hash_files([path]) for task, path in sorted(cfg.data_files.items())}
    for spec in specs:
        if spec["adapter"]:
            inputs["adapter"] = _adapter_fingerprint(spec["adapter"], run_dir)
    stage_config = {"evaluate": cfg.model_dump(mode="json"),
                    "models": [{k: v for k, v in s.items() if k != "adapter"} for s in specs]}
    stage = StageRun(run_dir, "evaluate", config=stage_config, inputs=inputs)
    if stage.is_current() and not force:
        console.print(f"evaluate: skipped (up to date) — {stage.dir / 'results.json'}")
        return stage.dir
    manager = task_manager(cfg.tasks)  # an unknown task fails here, before the stage folder is touched
    out = stage.start()

    device, dtype = _device_and_dtype(cfg.dtype)
    summary: dict[str, dict[str, Any]] = {spec["name"]: {} for spec in specs}
    examples = 0
    logging.getLogger("lm_eval").setLevel(logging.WARNING)

    with Progress(TextColumn("[bold]evaluate[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("", total=len(specs) * len(cfg.tasks))
        for spec in specs:
            lm = None
            for task in cfg.tasks:
                progress.update(bar, description=f"{spec['name']} / {task}")
                key = config_hash({"model": {k: v for k, v in spec.items() if k != "adapter"},
                                   "adapter": inputs.get("adapter") if spec["adapter"] else None,
                                   "task": task, "data": inputs.get(f"data:{task}"), "backend": cfg.backend,
                                   "dtype": dtype, "limit": cfg.limit, "seed": cfg.seed})
                marker = out / "done" / spec["name"] / f"{task}.json"
                done = json.loads(marker.read_text()) if marker.is_file() else None
                if done and done.get("key") == key and not force:
                    summary[spec["name"]][task] = done["summary"]
                    progress.advance(bar)
                    continue
                if lm is None:
                    lm = _build_lm(spec, cfg, device, dtype)
                raw = _evaluate_one(lm, manager, task, cfg, spec["prompt_format"])
                samples = raw.pop("samples", {}) or {}
                examples += _write_samples(out / "samples" / spec["name"] / f"{task}.jsonl", samples)
                atomic_write_json(out / "raw" / spec["name"] / f"{task}.json", raw)
                task_summary = results_summary(raw, task)
                atomic_write_json(marker, {"key": key, "summary": task_summary})
                summary[spec["name"]][task] = task_summary
                progress.advance(bar)
            del lm

    from importlib import metadata

    results = {
        "models": summary,
        "config": {**cfg.model_dump(mode="json"), "models": [{k: v for k, v in s.items()} for s in specs],
                   "device": device, "dtype": dtype, "lm_eval": metadata.version("lm-eval")},
        "scale": "metrics are fractions in [0, 1]; f1 is macro-F1 (classification) or SQuAD token F1",
    }
    atomic_write_json(out / "results.json", results)
    stage.finish(counts={"models": len(specs), "tasks": len(cfg.tasks), "sample_lines": examples},
                 outputs={"results": "results.json", "samples": "samples/", "raw": "raw/"})
    console.print(f"evaluate: wrote {out / 'results.json'}")
    return out


def _evaluate_one(lm, manager, task: str, cfg, prompt_format: str) -> dict[str, Any]:
    import lm_eval

    task_object = load_task_objects(manager, task, cfg.data_files.get(task))
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task_object],
        task_manager=manager,
        limit=cfg.limit,
        log_samples=True,
        apply_chat_template=prompt_format in ("chat", "bonito"),
        fewshot_as_multiturn=False,
        bootstrap_iters=0,  # no stderr: bootstrapping a custom aggregation (macro-F1) is slow
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    if raw is None:  # non-zero rank in a distributed launch
        raise UserError("evaluate: lm-eval returned no results on this process; run the stage without torchrun")
    return raw
