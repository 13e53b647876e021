"""Stage `generate`: unannotated text -> passages -> Bonito (or prompted) tasks.

Artifacts in `run_dir/generate/`:

- `shards/shard-00000.jsonl` — every generation (parsed or not) for `shard_size` passages, each
  shard written atomically as soon as it is done. A killed run resumes after the shards on disk;
  each shard is sampled with its own seed, so a resumed run ends with the same rows as an
  uninterrupted one (exactly so with the transformers engine).
- `tasks.jsonl` — one task per line: `input`, `output`, `task_type`, `context`, `source_id`.
- `dataset/` — the same rows as a Hugging Face dataset (`datasets.load_from_disk`).
- `stats.json` — documents, passages, generations, parse rate, tokens, tokens/s, seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import Recipe
from .corpus import Passage, input_fingerprint, load_documents, make_passages
from .engines import Engine, load_engine, resolve_engine_name
from .errors import UserError
from .generate_config import GenerateConfig, SamplingConfig
from .prompted import prompted_prompt, prompted_task
from .prompts import bonito_prompt, parse_bonito_output, short_task_type
from .rundir import StageRun, atomic_write_json, atomic_write_text, fsync_tree

__all__ = ["run", "TaskFormat", "passage_token_limit", "shard_seed", "generate_shards", "TASK_FIELDS"]

TASK_FIELDS = ("input", "output", "task_type", "context", "source_id")
_DEFAULT_PASSAGE_CAP = 1024
_SHARDS = "shards"
_SHARDS_OWNER = "fingerprint.json"


class TaskFormat:
    """How a passage becomes a prompt and a generation becomes a task, for one style and task type."""

    def __init__(self, config: GenerateConfig, tokenizer=None):
        self.style = config.style
        self.task_type = config.task_type
        self.tokenizer = tokenizer
        if self.style == "prompted" and self.tokenizer is None:
            from .models import load_tokenizer

            self.tokenizer = load_tokenizer(
                config.tokenizer or config.model, field="generate.tokenizer" if config.tokenizer else "generate.model",
                gguf_file=None if config.tokenizer else config.gguf_file, trust_remote_code=config.trust_remote_code,
            )
        if self.style == "prompted" and not self.tokenizer.chat_template:
            raise UserError(f"generate.style: prompted needs a chat model, but {config.tokenizer or config.model!r} "
                            "has no chat template; use an instruct/chat model or style: bonito")

    def prompt(self, passage: str) -> str:
        if self.style == "bonito":
            return bonito_prompt(passage, self.task_type)
        return prompted_prompt(self.tokenizer, passage, self.task_type)

    def parse(self, generation: str, passage: str) -> tuple[str, str] | None:
        if self.style == "bonito":
            return parse_bonito_output(generation, passage)
        return prompted_task(generation, passage)


def passage_token_limit(config: GenerateConfig, engine: Engine, task_format: TaskFormat) -> int:
    """Passage length in tokens: the configured one, or what fits beside the prompt and the output."""
    overhead = engine.count_tokens(task_format.prompt("x")) + 8  # +8: joints between prompt and passage
    context = engine.max_context
    room = None if context is None else context - overhead - config.sampling.max_tokens
    if config.chunking.max_tokens is not None:
        if room is not None and config.chunking.max_tokens > room:
            raise UserError(f"generate.chunking.max_tokens: {config.chunking.max_tokens} tokens of passage plus the "
                            f"prompt ({overhead}) and sampling.max_tokens ({config.sampling.max_tokens}) exceed the "
                            f"generator's context of {context}; set it to at most {max(room, 0)}")
        return config.chunking.max_tokens
    if room is None:
        return _DEFAULT_PASSAGE_CAP
    if room < 16:
        raise UserError(f"generate.sampling.max_tokens: {config.sampling.max_tokens} output tokens leave no room for a "
                        f"passage in the generator's context of {context}; lower sampling.max_tokens")
    return min(room, _DEFAULT_PASSAGE_CAP)


def shard_seed(seed: int, shard_index: int) -> int:
    """A seed per shard, so that a resumed shard samples exactly as it would have without the interruption."""
    return (seed * 1_000_003 + shard_index) % (2**31 - 1)


def _shard_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"shard-{index:05d}.jsonl"


def _prepare_shards(stage_dir: Path, fingerprint: str, force: bool) -> Path:
    """Keep shards only if they were made by this exact config and input; else start over."""
    shards_dir = stage_dir / _SHARDS
    owner = shards_dir / _SHARDS_OWNER
    try:
        previous = json.loads(owner.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        previous = None
    if force or previous != fingerprint:
        shutil.rmtree(shards_dir, ignore_errors=True)
    shards_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(owner, {"fingerprint": fingerprint})
    return shards_dir


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _shard_rows(passages: list[Passage], first_index: int, generations: list[list[str]], task_format: TaskFormat,
                engine: Engine, prompts: list[str]) -> list[dict[str, Any]]:
    rows = []
    for offset, (passage, samples, prompt) in enumerate(zip(passages, generations, prompts, strict=True)):
        prompt_tokens = engine.count_tokens(prompt)
        for sample_index, text in enumerate(samples):
            parsed = task_format.parse(text, passage.text)
            rows.append({
                "passage_index": first_index + offset,
                "source_id": passage.source_id,
                "context": passage.text,
                "generation_index": sample_index,
                "generation": text,
                "parsed": parsed is not None,
                "input": parsed[0] if parsed else None,
                "output": parsed[1] if parsed else None,
                # Prompt tokens are counted once per passage, on its first generation.
                "prompt_tokens": prompt_tokens if sample_index == 0 else 0,
                "generated_tokens": engine.count_tokens(text),
            })
    return rows


def generate_shards(passages: list[Passage], engine: Engine, task_format: TaskFormat, sampling: SamplingConfig,
                    shards_dir: Path, shard_size: int, rank: int = 0, processes: int = 1,
                    before_generating: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Generate every missing shard (of this process's share: shard i goes to process i % processes);
    return this call's generated tokens and seconds. `before_generating` runs once the missing shards
    are known (processes side by side wait there, so that none counts another's new shard as resumed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    shard_count = (len(passages) + shard_size - 1) // shard_size
    missing_everywhere = [i for i in range(shard_count) if not _shard_path(shards_dir, i).is_file()]
    missing = [i for i in missing_everywhere if i % processes == rank]
    before_generating()

    def shard_of(index: int) -> list[Passage]:
        return passages[index * shard_size:(index + 1) * shard_size]

    share = sum(len(shard_of(i)) for i in range(rank, shard_count, processes))
    generated_tokens, seconds = 0, 0.0
    columns = (TextColumn("generate"), BarColumn(), MofNCompleteColumn(), TextColumn("passages"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task("generate", total=share, completed=share - sum(len(shard_of(i)) for i in missing))
        for index in missing:
            shard = shard_of(index)
            prompts = [task_format.prompt(p.text) for p in shard]
            started = time.perf_counter()
            generations = engine.generate(prompts, sampling.model_copy(update={"seed": shard_seed(sampling.seed, index)}))
            seconds += time.perf_counter() - started
            if len(generations) != len(shard):
                raise RuntimeError(f"engine returned {len(generations)} results for {len(shard)} prompts")
            rows = _shard_rows(shard, index * shard_size, generations, task_format, engine, prompts)
            generated_tokens += sum(r["generated_tokens"] for r in rows)
            atomic_write_text(_shard_path(shards_dir, index),
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            progress.advance(bar, len(shard))
    return {"generated_tokens_this_run": generated_tokens, "generation_seconds_this_run": seconds,
            "shards_resumed": shard_count - len(missing_everywhere), "shards": shard_count}


class _Processes:
    """This process among those of a torchrun / `accelerate launch` (rank 0 of 1 when run alone).

    Each process takes every `count`-th shard on its own GPU (LOCAL_RANK). The launch's process
    group gets the backend accelerate would choose (NCCL with CUDA, gloo without), so a train stage
    next in the same launch finds the group it expects. Waiting for each other goes through a gloo
    group of its own with a long timeout: a process that finishes its shards first may wait for the
    others' last shard for longer than NCCL's default 10 minutes.
    """

    def __init__(self):
        self.rank, self.count, self._group = 0, int(os.environ.get("WORLD_SIZE", "1")), None
        if self.count <= 1:
            self.count = 1
            return
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.count = dist.get_rank(), dist.get_world_size()
        self._group = dist.new_group(backend="gloo", timeout=timedelta(days=1))

    def wait_for_all(self) -> None:
        if self._group is not None:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def summed(self, throughput: dict[str, float]) -> dict[str, float]:
        """Every process's generated tokens added up; seconds are the slowest process's (they ran side by side)."""
        if self._group is None:
            return throughput
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.count
        dist.all_gather_object(everyone, throughput, group=self._group)
        return {**throughput, "generated_tokens_this_run": sum(t["generated_tokens_this_run"] for t in everyone),
                "generation_seconds_this_run": max(t["generation_seconds_this_run"] for t in everyone)}


def _save_dataset(rows: list[dict[str, Any]], target: Path) -> None:
    """save_to_disk into a temp folder, then swap it in, so a reader never sees half a dataset."""
    import datasets

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    features = datasets.Features({name: datasets.Value("string") for name in TASK_FIELDS})
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp))
    fsync_tree(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="generate", show_header=False)
    for key, value in stats.items():
        table.add_row(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


def run(recipe: Recipe, run_dir: Path, force: bool = False) -> Path:
    """Run the generate stage of `recipe` into `run_dir/generate` and return that folder."""
    config = recipe.generate
    if config is None:
        raise UserError("the recipe has no `generate` section; add one to run this stage")
    stage = StageRun(run_dir, "generate", config=config, inputs=input_fingerprint(config.input))
    if stage.is_current() and not force:
        from rich.console import Console

        Console(stderr=True).print(f"generate: skipped (up to date) — {stage.dir}")
        return stage.dir
    started = time.time()
    processes = _Processes()
    if processes.count > 1 and (engine_name := resolve_engine_name(config)) != "transformers":
        raise UserError(f"generate.engine {engine_name} spreads work over GPUs or servers itself: "
                        "run the generate stage without torchrun / accelerate launch, or use engine: transformers "
                        "for one generator per process")
    # Input, model and passage problems are found before the stage folder is touched, so a bad
    # rerun leaves a finished stage (and its shards) as they were.
    documents = load_documents(config.input)
    engine = load_engine(config)
    try:
        task_format = TaskFormat(config, tokenizer=getattr(engine, "tokenizer", None))
        limit = passage_token_limit(config, engine, task_format)
        passages, chunk_stats = make_passages(documents, config.chunking, limit, engine.count_tokens)
        if not passages:
            raise UserError(f"generate.input: the {len(documents)} documents hold no text passages (all empty or "
                            f"shorter than chunking.min_chars={config.chunking.min_chars}); check the input")
        if processes.rank == 0:  # one process clears or keeps the shards; the others look once it has
            stage.start()
            _prepare_shards(stage.dir, stage.fingerprint, force)
        processes.wait_for_all()
        shards_dir = stage.dir / _SHARDS
        throughput = generate_shards(passages, engine, task_format, config.sampling, shards_dir, config.shard_size,
                                     processes.rank, processes.count, before_generating=processes.wait_for_all)
    finally:
        engine.close()
    throughput = processes.summed(throughput)  # also waits for every process's shards
    if processes.rank != 0:
        processes.wait_for_all()  # until process 0 has written the tasks that a train stage next reads
        return stage.dir

    rows = [row for index in range(throughput["shards"]) for row in _read_jsonl(_shard_path(shards_dir, index))]
    task_type = short_task_type(config.task_type)
    tasks, seen, duplicate_tasks = [], set(), 0
    for row in rows:
        if not row["parsed"]:
            continue
        key = (row["input"], row["output"])
        if key in seen:
            duplicate_tasks += 1
            continue
        seen.add(key)
        tasks.append({"input": row["input"], "output": row["output"], "task_type": task_type,
                      "context": row["context"], "source_id": row["source_id"]})
    parsed = sum(row["parsed"] for row in rows)
    generated_tokens = sum(row["generated_tokens"] for row in rows)
    gen_seconds = throughput["generation_seconds_this_run"]
    stats = {
        "documents": chunk_stats.documents,
        "passages": chunk_stats.passages,
        "passage_token_limit": limit,
        "short_passages_dropped": chunk_stats.short_passages_dropped,
        "duplicate_passages_dropped": chunk_stats.duplicate_passages_dropped,
        "generations": len(rows),
        "parsed": parsed,
        "parse_rate": round(parsed / len(rows), 4) if rows else 0.0,
        "duplicate_tasks_dropped": duplicate_tasks,
        "tasks": len(tasks),
        "prompt_tokens": sum(row["prompt_tokens"] for row in rows),
        "generated_tokens": generated_tokens,
        "tokens_per_s": round(throughput["generated_tokens_this_run"] / gen_seconds, 2) if gen_seconds else None,
        "shards": throughput["shards"],
        "shards_resumed": throughput["shards_resumed"],
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(stage.dir / "stats.json", stats)
    if not tasks:
        hint = ("use style: prompted for chat/instruct models" if config.style == "bonito"
                else "try a larger chat model or style: bonito with a Bonito model")
        raise UserError(f"generate: no generation parsed into a task (parse rate {stats['parse_rate']:.0%} of "
                        f"{len(rows)}); wrong model for style {config.style!r}? {hint}, or raise sampling.max_tokens "
                        f"(now {config.sampling.max_tokens}); generations are in {shards_dir}")
    atomic_write_text(stage.dir / "tasks.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks))
    _save_dataset(tasks, stage.dir / "dataset")
    _print_stats(stats)
    stage.finish(
        counts={key: stats[key] for key in ("documents", "passages", "generations", "parsed", "tasks")},
        outputs={"tasks": "tasks.jsonl", "dataset": "dataset", "stats": "stats.json", "shards": _SHARDS},
        extra={"stats": stats},
    )
    processes.wait_for_all()
    return stage.dir
