"""`python tests/_interrupt_child.py ARGS...` = `python -m bonito_adapt ARGS...` with test hooks, for the
kill-and-resume tests of tests/test_reliability.py.

The CLI, its signal handling and every stage run unchanged; the hooks only make a tiny random model
usable and the kill points deterministic:

- generate: the transformers engine's completions are shaped so that about half parse as Bonito tasks
  (a random model never writes `<|pipe|>`); `BONITO_TEST_PIPES=0` makes none parse.
- `BONITO_TEST_DELAY_S`: sleep this long before each generated shard, after each optimizer step, and
  before each evaluated (model, task) pair, so a test can signal while work is in progress.
- `BONITO_TEST_MARKS`: a folder; `evaluate-<model>-<task>` is created there when a pair starts,
  `generate-<process>-<seed>` when a shard is generated, and `loglikelihood-<process>-<requests>-<n>`
  when a process scores a batch of ranked requests (process: torchrun's RANK, 0 alone).
- one torch thread (the CI box has 2 shared cores).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DELAY_S = float(os.environ.get("BONITO_TEST_DELAY_S", "0"))
PIPES = os.environ.get("BONITO_TEST_PIPES", "1") != "0"
MARKS = os.environ.get("BONITO_TEST_MARKS")
PIPE = "<|pipe|>"


class ShapedEngine:
    """The real transformers engine; each even-length completion becomes `text <|pipe|> length`."""

    name = "transformers"

    def __init__(self, inner, pipes: bool = PIPES, delay_s: float = DELAY_S):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.pipes, self.delay_s = pipes, delay_s

    @property
    def max_context(self):
        return self.inner.max_context

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def generate(self, prompts, sampling):
        time.sleep(self.delay_s)
        if MARKS:
            (Path(MARKS) / f"generate-{os.environ.get('RANK', '0')}-{sampling.seed}").touch()
        return [[self._shape(text) for text in samples] for samples in self.inner.generate(prompts, sampling)]

    def _shape(self, text: str) -> str:
        text = text.replace(PIPE, "")
        return f"{text} {PIPE} {len(text)}" if self.pipes and len(text) % 2 == 0 else text

    def close(self):
        self.inner.close()


def count_requests(lm) -> None:
    """Mark how many loglikelihood requests this process scores (lm-eval calls the method by name)."""
    if getattr(lm, "_counted", False):
        return
    real = lm.loglikelihood

    def counted(requests, *args, **kwargs):
        (Path(MARKS) / f"loglikelihood-{os.environ.get('RANK', '0')}-{len(requests)}-{time.time_ns()}").touch()
        return real(requests, *args, **kwargs)

    lm.loglikelihood, lm._counted = counted, True


def install_hooks() -> None:
    import torch

    torch.set_num_threads(1)

    from bonito_adapt import train
    from bonito_adapt.engines.transformers_engine import TransformersEngine
    from bonito_adapt.evaluate import stage as evaluate
    from bonito_adapt.generate import stage as generate

    generate.load_engine = lambda name, spec: ShapedEngine(TransformersEngine(spec))

    train_run = train.run

    def slow_train_run(recipe, run_dir, force=False):
        from transformers import TrainerCallback  # imported only when training (it is slow to import)

        class SlowSteps(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(DELAY_S)

        return train_run(recipe, run_dir, force=force, callbacks=[SlowSteps()])

    train.run = slow_train_run

    evaluate_one = evaluate._evaluate_one

    def slow_evaluate_one(lm, manager, task, cfg, scoring):
        if MARKS:
            model = "adapted" if scoring["wrapper"] == "bonito" else "base"
            (Path(MARKS) / f"evaluate-{model}-{task}").touch()
            count_requests(lm)
        time.sleep(DELAY_S)
        return evaluate_one(lm, manager, task, cfg, scoring)

    evaluate._evaluate_one = slow_evaluate_one


if __name__ == "__main__":
    install_hooks()
    from bonito_adapt.cli import main

    sys.exit(main(sys.argv[1:]))
