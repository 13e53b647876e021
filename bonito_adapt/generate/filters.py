"""What the generate stage does to parsed tasks before training sees them, each step recorded.

`balance_labels` (`generate.balance_labels`): for task types whose answers come from a closed set
(yes/no, NLI labels, sentiment, ...) a small or unsteered generator can answer one way most of the
time; a model trained on that learns the skew, not the task (the quickstart: 21 of 27 yes/no tasks
answered "No", and the adapted model answered "No" to everything). Balancing downsamples each answer
to at most `ratio` times the rarest answer's count (1.0 = even), choosing the rows kept at random with
the sampling seed. Dropped rows are kept in `generate/dropped.jsonl` with the filter that dropped them.

`near_duplicates` (`generate.near_duplicates`): tasks whose word 3-grams (input and output) overlap an
earlier task's by at least the threshold (Jaccard) are dropped: a generator asked many times about
similar passages repeats itself. Candidates come from MinHash LSH (`datasketch`); each is confirmed with
the exact Jaccard similarity, so no task is dropped on a hash collision alone.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from typing import Any

from .task_format import PIPE

__all__ = ["CLOSED_ANSWER_TYPES", "JUDGE_PROMPT", "answer_label", "failure_reason", "balance_labels", "drop_near_duplicates",
           "judge_tasks", "apply_judge"]

# Task types whose outputs come from a small closed set of answers (short names).
CLOSED_ANSWER_TYPES = frozenset({"ynqa", "nli", "te", "paraphrase_id", "sentiment", "topic_class", "mcqa"})


def answer_label(output: str) -> str:
    """The answer an output stands for: lower-cased, surrounding punctuation and spaces dropped."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", output.strip().lower())


def failure_reason(generation: str, separator: str = PIPE) -> str:
    """Why a generation did not parse into (input, output), in a few words."""
    count = generation.count(separator)
    if not generation.strip():
        return "empty generation"
    if count == 0:
        return f"no {separator} separator (ran out of tokens or never wrote one)"
    if count > 1:
        return f"{count} {separator} separators (one expected)"
    task_input, task_output = (part.strip() for part in generation.split(separator))
    if not task_input:
        return "empty input before the separator"
    if not task_output:
        return "empty output after the separator"
    return "rejected by the style's parser"


def balance_labels(tasks: list[dict[str, Any]], ratio: float, seed: int) -> tuple[list[dict[str, Any]],
                                                                                   list[dict[str, Any]], dict]:
    """(kept tasks in their order, dropped tasks, stats) after downsampling every answer of a closed-answer
    task type to at most `ratio` x the rarest answer's count."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        if task["task_type"] in CLOSED_ANSWER_TYPES:
            by_label[answer_label(task["output"])].append(index)
    before = {label: len(indices) for label, indices in by_label.items()}
    if len(by_label) < 2:
        return tasks, [], {"before": before, "after": before, "dropped": 0,
                           "note": "fewer than two answers: nothing to balance"}
    cap = max(1, int(ratio * min(before.values())))
    rng = random.Random(seed)
    dropped_indices: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        if len(indices) > cap:
            dropped_indices.update(rng.sample(indices, len(indices) - cap))
    kept = [task for index, task in enumerate(tasks) if index not in dropped_indices]
    dropped = [{**task, "dropped_by": "balance_labels"} for index, task in enumerate(tasks) if index in dropped_indices]
    after = Counter(answer_label(t["output"]) for t in kept if t["task_type"] in CLOSED_ANSWER_TYPES)
    return kept, dropped, {"before": before, "after": dict(after), "dropped": len(dropped), "ratio": ratio,
                           "cap_per_answer": cap}


def _shingles(task: dict[str, Any], size: int = 3) -> set[str]:
    words = f"{task['input']} || {task['output']}".lower().split()
    return {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def drop_near_duplicates(tasks: list[dict[str, Any]], threshold: float, seed: int) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], dict]:
    """(kept tasks, dropped tasks, stats): each task whose 3-gram Jaccard similarity with an earlier kept task
    is at least `threshold` is dropped (the first of a group stays)."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        from ..errors import missing_extra

        raise missing_extra("datasketch", "filters") from None
    # LSH finds pairs near its own threshold only with some probability: look wider, then confirm exactly.
    lsh = MinHashLSH(threshold=max(0.05, 0.7 * threshold), num_perm=128)
    kept, dropped, shingles = [], [], {}
    for index, task in enumerate(tasks):
        grams = _shingles(task)
        signature = MinHash(num_perm=128, seed=seed)
        for gram in grams:
            signature.update(gram.encode("utf-8"))
        match = next((other for other in lsh.query(signature)
                      if len(grams & shingles[other]) / len(grams | shingles[other]) >= threshold), None)
        if match is not None:
            dropped.append({**task, "dropped_by": "near_duplicates", "duplicate_of": tasks[match]["input"][:200]})
            continue
        lsh.insert(index, signature)
        shingles[index] = grams
        kept.append(task)
    return kept, dropped, {"threshold": threshold, "dropped": len(dropped)}


# The judge's default question; {passage}, {input} and {output} are filled in per task.
JUDGE_PROMPT = ("Below are a passage and a task written from it.\n\nPassage:\n{passage}\n\nTask:\n{input}\n\n"
                "Proposed answer:\n{output}\n\nIs the proposed answer correct and supported by the passage? "
                "Answer yes or no.\nAnswer:")


def _task_key(task: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps([task["context"], task["input"], task["output"]]).encode()).hexdigest()[:24]


def judge_tasks(engine, tasks: list[dict[str, Any]], prompt: str, max_tokens: int, seed: int, cache_path,
                batch: int = 256) -> dict[str, str]:
    """The generator's own verdict on each task (greedy), by task key; verdicts already in `cache_path` (a
    jsonl written as they come) are reused, so a resumed stage does not judge a task twice."""
    import json
    from pathlib import Path

    from ..engines.spec import SamplingConfig
    from ..rundir import atomic_write_text

    cache_path = Path(cache_path)
    verdicts: dict[str, str] = {}
    if cache_path.is_file():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                verdicts[row["key"]] = row["verdict"]
    todo = [task for task in tasks if _task_key(task) not in verdicts]
    sampling = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=seed)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        prompts = [prompt.format(passage=t["context"], input=t["input"], output=t["output"]) for t in chunk]
        for task, samples in zip(chunk, engine.generate(prompts, sampling), strict=True):
            verdicts[_task_key(task)] = samples[0].strip()
        atomic_write_text(cache_path, "".join(json.dumps({"key": k, "verdict": v}) + "\n" for k, v in verdicts.items()))
    return verdicts


def apply_judge(tasks: list[dict[str, Any]], verdicts: dict[str, str], accept: str) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], dict]:
    """(kept, dropped, stats): a task stays when the judge's answer starts with `accept` (case-insensitive)."""
    kept, dropped = [], []
    for task in tasks:
        verdict = verdicts.get(_task_key(task), "")
        if verdict.lower().lstrip(" \"'*").startswith(accept.lower()):
            kept.append(task)
        else:
            dropped.append({**task, "dropped_by": "judge", "judge_verdict": verdict[:200]})
    return kept, dropped, {"judged": len(tasks), "kept": len(kept), "dropped": len(dropped)}
