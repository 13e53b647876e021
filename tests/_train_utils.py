"""Bonito-like task files for training checks on random-weight models of real shapes.

Lengths follow /work/shared/bench/reference_qlora.py (input ~ 400 +- 150 words, output 2..64 words,
fixed seed), with words `w<N>` that the bench's random-model tokenizer knows.

    python tests/_train_utils.py /tmp/tasks.jsonl 128
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def write_bonito_like_tasks(path: Path, count: int, seed: int = 0, vocab_words: int = 30_000) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            input_words = int(min(1024, max(64, rng.gauss(400, 150))))
            output_words = rng.randint(2, 64)
            words = [f"w{rng.randrange(vocab_words)}" for _ in range(input_words + output_words)]
            row = {"input": " ".join(words[:input_words]), "output": " ".join(words[input_words:])}
            handle.write(json.dumps(row) + "\n")
    return Path(path)


if __name__ == "__main__":
    print(write_bonito_like_tasks(Path(sys.argv[1]), int(sys.argv[2])))
