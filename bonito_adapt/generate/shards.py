"""Generation in shards: each shard of up to `shard_size` consecutive passages is generated, parsed and
written atomically on its own, with its own seed, so a killed run resumes after the shards on disk and
ends with the rows an uninterrupted run would have.

A shard's file names its passages (`shard-<first>-<end>.jsonl`, end exclusive), so finished work does
not depend on how it was cut: after a change of `shard_size` (or of any other setting that only
changes how generations are computed) the passages already generated are kept and only the others
are generated, in shards of the new size.

Engines that batch requests themselves (vLLM) get several shards per call (`prompts_per_call`): its
batch never drains at a shard boundary, and a kill loses at most the shards of the call in flight.

Under torchrun / `accelerate launch` (transformers engine) each process takes every N-th missing
shard on its own GPU (`Processes`); process 0 merges.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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

__all__ = ["SHARDS", "shard_seed", "shard_name", "existing_shards", "plan_shards", "passages_fingerprint",
           "prepare_shards", "read_jsonl", "read_shard_rows", "generate_shards", "Processes"]

SHARDS = "shards"
_SHARDS_OWNER = "fingerprint.json"
_SHARD_FILE = re.compile(r"shard-(\d{8})-(\d{8})\.jsonl")


def shard_seed(seed: int, first_passage: int) -> int:
    """A seed per shard, from its first passage: a resumed shard samples exactly as it would have
    without the interruption."""
    return (seed * 1_000_003 + first_passage) % (2**31 - 1)


def shard_name(first: int, end: int) -> str:
    return f"shard-{first:08d}-{end:08d}.jsonl"


def existing_shards(shards_dir: Path) -> list[tuple[int, int, Path]]:
    """(first passage, end passage, path) of every finished shard, in passage order."""
    found = []
    for path in Path(shards_dir).glob("shard-*.jsonl"):
        match = _SHARD_FILE.fullmatch(path.name)
        if match:
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


def plan_shards(passage_count: int, shard_size: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The shards still to generate: within each block of `shard_size` passages, every run of passages
    that no finished shard holds. With the same shard size as before that is the missing shards themselves."""
    covered = bytearray(passage_count)
    for first, end in done:
        covered[first:end] = b"\x01" * (min(end, passage_count) - first)
    planned = []
    for block in range(0, passage_count, shard_size):
        index, block_end = block, min(block + shard_size, passage_count)
        while index < block_end:
            if covered[index]:
                index += 1
                continue
            first = index
            while index < block_end and not covered[index]:
                index += 1
            planned.append((first, index))
    return planned


def passages_fingerprint(passages: list[Passage]) -> str:
    """What the shards' passage indices refer to: the passages' texts and sources, in order."""
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(json.dumps([passage.source_id, passage.text], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def prepare_shards(stage_dir: Path, fingerprint: str, force: bool) -> Path:
    """Keep shards only if they were made from these settings (those that change results) and these
    passages; else start over."""
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


def read_shard_rows(shards_dir: Path) -> list[dict[str, Any]]:
    """Every generation on disk, in passage order."""
    return [row for _, _, path in existing_shards(shards_dir) for row in read_jsonl(path)]


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


def _calls(shards: list[tuple[int, int]], prompts_per_call: int) -> list[list[tuple[int, int]]]:
    """Consecutive shards grouped into engine calls of at most `prompts_per_call` prompts (one shard per
    call at least)."""
    calls: list[list[tuple[int, int]]] = []
    size = 0
    for shard in shards:
        count = shard[1] - shard[0]
        if calls and size + count <= prompts_per_call:
            calls[-1].append(shard)
            size += count
        else:
            calls.append([shard])
            size = count
    return calls


def generate_shards(passages: list[Passage], engine: Engine, task_format: TaskFormat, sampling: SamplingConfig,
                    shards_dir: Path, shard_size: int, rank: int = 0, processes: int = 1,
                    before_generating: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Generate every missing shard (of this process's share: the i-th missing shard goes to process
    i % processes); return this call's generated tokens and seconds. `before_generating` runs once the
    missing shards are known (processes side by side wait there, so that none counts another's new shard
    as resumed). Engines with `generate_many` get `engine.prompts_per_call` prompts' worth of shards at once."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    finished = existing_shards(shards_dir)
    planned = plan_shards(len(passages), shard_size, [(first, end) for first, end, _ in finished])
    mine = [shard for i, shard in enumerate(planned) if i % processes == rank]
    before_generating()

    grouped = hasattr(engine, "generate_many")
    calls = _calls(mine, max(int(getattr(engine, "prompts_per_call", 0) or 0), 1)) if grouped else [[s] for s in mine]
    todo = sum(end - first for first, end in mine)
    generated_tokens, seconds = 0, 0.0
    columns = (TextColumn("generate"), BarColumn(), MofNCompleteColumn(), TextColumn("passages"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task("generate", total=todo)
        for call in calls:
            requests = []
            for first, end in call:
                prompts = [task_format.prompt(p.text) for p in passages[first:end]]
                requests.append((prompts, sampling.model_copy(update={"seed": shard_seed(sampling.seed, first)})))
            started = time.perf_counter()
            if grouped and len(requests) > 1:
                results = engine.generate_many(requests)
            else:
                results = [engine.generate(prompts, params) for prompts, params in requests]
            seconds += time.perf_counter() - started
            for (first, end), (prompts, _), generations in zip(call, requests, results, strict=True):
                if len(generations) != end - first:
                    raise RuntimeError(f"engine returned {len(generations)} results for {end - first} prompts")
                rows = _shard_rows(passages[first:end], first, generations, task_format, engine, prompts)
                generated_tokens += sum(r["generated_tokens"] for r in rows)
                atomic_write_text(shards_dir / shard_name(first, end),
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                progress.advance(bar, end - first)
    return {"generated_tokens_this_run": generated_tokens, "generation_seconds_this_run": seconds,
            "shards_resumed": len(finished), "passages_resumed": sum(end - first for first, end, _ in finished),
            "shards": len(finished) + len(planned)}


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


