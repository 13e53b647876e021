"""Stage `generate`: unannotated text -> passages -> Bonito (or prompted) tasks.

Artifacts in `run_dir/generate/`:

- `shards/shard-<first>-<end>.jsonl` — every generation (parsed or not) of passages first..end-1 (up to
  `shard_size`), each shard written atomically as soon as it is done. A killed run keeps the passages of
  the shards on disk, also when an execution setting (shard_size, batch_size, engine) changed; each
  shard is sampled with its own seed, so an unchanged rerun ends with the same rows as an
  uninterrupted one (exactly so with the transformers engine).
- `tasks.jsonl` — one task per line: `input`, `output`, `task_type`, `context`, `source_id`.
- `dataset/` — the same rows as a Hugging Face dataset (`datasets.load_from_disk`).
- `stats.json` — documents, passages, generations, parse rate, tokens, tokens/s, seconds.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engines import Engine, load_engine, resolve_engine_name
from ..errors import UserError
from ..rundir import StageRun, atomic_write_json, atomic_write_text, fsync_tree
from .config import GenerateConfig
from .corpus import input_fingerprint, load_documents, make_passages
from .filters import (
    CLOSED_ANSWER_TYPES,
    answer_label,
    apply_judge,
    balance_labels,
    drop_near_duplicates,
    judge_tasks,
)
from .shards import SHARDS, Processes, generate_shards, passages_fingerprint, prepare_shards, read_shard_rows
from .task_format import TaskFormat, short_task_type

if TYPE_CHECKING:
    from ..config import Recipe

__all__ = ["run", "passage_token_limit", "TASK_FIELDS"]

TASK_FIELDS = ("input", "output", "task_type", "context", "source_id")
_DEFAULT_PASSAGE_CAP = 1024


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


def _unique_tasks(rows: list[dict[str, Any]], task_type: str) -> tuple[list[dict[str, Any]], int]:
    """The parsed generations as tasks, exact duplicates (same input and output) once; and how many were dropped."""
    short = short_task_type(task_type)
    tasks, seen, duplicates = [], set(), 0
    for row in rows:
        if not row["parsed"]:
            continue
        key = (row["input"], row["output"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        tasks.append({"input": row["input"], "output": row["output"], "task_type": short,
                      "context": row["context"], "source_id": row["source_id"]})
    return tasks, duplicates


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
    processes = Processes()
    if processes.count > 1 and (engine_name := resolve_engine_name(config.engine, config.engine_spec())) != "transformers":
        raise UserError(f"generate.engine {engine_name} spreads work over GPUs or servers itself: "
                        "run the generate stage without torchrun / accelerate launch, or use engine: transformers "
                        "for one generator per process")
    # Input, model and passage problems are found before the stage folder is touched, so a bad
    # rerun leaves a finished stage (and its shards) as they were.
    documents = load_documents(config.input)
    engine = load_engine(config.engine, config.engine_spec())
    try:
        task_format = TaskFormat(config.style, config.task_type, tokenizer=getattr(engine, "tokenizer", None),
                                 spec=config.engine_spec())
        limit = passage_token_limit(config, engine, task_format)
        passages, chunk_stats = make_passages(documents, config.chunking, limit, engine.count_tokens)
        if not passages:
            raise UserError(f"generate.input: the {len(documents)} documents hold no text passages (all empty or "
                            f"shorter than chunking.min_chars={config.chunking.min_chars}); check the input")
        if hasattr(engine, "expect_job"):  # e.g. whether a compiled decode step repays its compile
            engine.expect_job(len(passages) * config.sampling.n * config.sampling.max_tokens // processes.count)
        if processes.rank == 0:  # one process clears or keeps the shards; the others look once it has
            stage.start()
            # Shards stay while the result settings, the input and the passages are the same.
            prepare_shards(stage.dir, f"{stage.fingerprint}:{passages_fingerprint(passages)}", force)
        processes.wait_for_all()
        shards_dir = stage.dir / SHARDS
        throughput = generate_shards(passages, engine, task_format, config.sampling, shards_dir, config.shard_size,
                                     processes.rank, processes.count, before_generating=processes.wait_for_all)
        verdicts = rows = None
        if config.judge is not None:
            processes.wait_for_all()  # every shard on disk; process 0 judges them with its generator
            if processes.rank == 0:
                rows = read_shard_rows(shards_dir)
                verdicts = judge_tasks(engine, _unique_tasks(rows, config.task_type)[0], config.judge.prompt,
                                       config.judge.max_tokens, config.sampling.seed, stage.dir / "judge.jsonl")
    finally:
        engine.close()
    throughput = processes.summed(throughput)  # also waits for every process's shards
    if processes.rank != 0:
        processes.wait_for_all()  # until process 0 has written the tasks that a train stage next reads
        return stage.dir

    if rows is None:  # read once: the judge already read them
        rows = read_shard_rows(shards_dir)
    task_type = short_task_type(config.task_type)
    tasks, duplicate_tasks = _unique_tasks(rows, config.task_type)
    dropped: list[dict] = []
    balance = near = judged = None
    if verdicts is not None:
        tasks, dropped, judged = apply_judge(tasks, verdicts, config.judge.accept)
    if config.near_duplicates is not None:  # before balancing, so balancing counts distinct tasks
        tasks, near_copies, near = drop_near_duplicates(tasks, config.near_duplicates, config.sampling.seed)
        dropped += near_copies
    if config.balance_labels is not None:
        tasks, unbalanced, balance = balance_labels(tasks, config.balance_labels, config.sampling.seed)
        dropped += unbalanced
    atomic_write_text(stage.dir / "dropped.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in dropped))
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
        "answers": dict(Counter(answer_label(t["output"]) for t in tasks).most_common(20))
        if task_type in CLOSED_ANSWER_TYPES else None,
        "judge": judged,
        "near_duplicates": near,
        "balance_labels": balance,
        "prompt_tokens": sum(row["prompt_tokens"] for row in rows),
        "generated_tokens": generated_tokens,
        "tokens_per_s": round(throughput["generated_tokens_this_run"] / gen_seconds, 2) if gen_seconds else None,
        "shards": throughput["shards"],
        "shards_resumed": throughput["shards_resumed"],
        "passages_resumed": throughput["passages_resumed"],
        "seconds": round(time.time() - started, 2),
    }
    stats = {key: value for key, value in stats.items() if value is not None or key == "tokens_per_s"}
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
        outputs={"tasks": "tasks.jsonl", "dataset": "dataset", "stats": "stats.json", "shards": SHARDS,
                 "dropped": "dropped.jsonl"},
        extra={"stats": stats},
    )
    processes.wait_for_all()
    return stage.dir
