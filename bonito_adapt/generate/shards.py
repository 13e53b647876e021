"""Generation in shards: each shard of `shard_size` passages is generated, parsed and written
atomically on its own, with its own seed, so a killed run resumes after the shards on disk and
ends with the rows an uninterrupted run would have.

Under torchrun / `accelerate launch` (transformers engine) each process takes every N-th shard on
its own GPU (`Processes`); process 0 merges.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..engines import Engine
from ..engines.spec import SamplingConfig
from ..rundir import atomic_write_json, atomic_write_text
from .corpus import Passage
from .task_format import TaskFormat

__all__ = ["SHARDS", "shard_seed", "shard_path", "prepare_shards", "read_jsonl", "generate_shards", "Processes"]

SHARDS = "shards"
_SHARDS_OWNER = "fingerprint.json"


def shard_seed(seed: int, shard_index: int) -> int:
    """A seed per shard, so that a resumed shard samples exactly as it would have without the interruption."""
    return (seed * 1_000_003 + shard_index) % (2**31 - 1)


def shard_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"shard-{index:05d}.jsonl"


def prepare_shards(stage_dir: Path, fingerprint: str, force: bool) -> Path:
    """Keep shards only if they were made by this exact config and input; else start over."""
    shards_dir = stage_dir / SHARDS
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


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
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
    missing_everywhere = [i for i in range(shard_count) if not shard_path(shards_dir, i).is_file()]
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
            atomic_write_text(shard_path(shards_dir, index),
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            progress.advance(bar, len(shard))
    return {"generated_tokens_this_run": generated_tokens, "generation_seconds_this_run": seconds,
            "shards_resumed": shard_count - len(missing_everywhere), "shards": shard_count}


class Processes:
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


