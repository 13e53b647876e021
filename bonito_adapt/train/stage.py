"""Stage `train`: adapt the target model to the generated tasks with (Q-)LoRA, TRL's SFTTrainer and PEFT.

Writes into run_dir/train/: `checkpoints/` (a killed run resumes from the last one), `adapter/`
(PEFT adapter + tokenizer), `merged/` (with `merge: true`), `log_history.json`, `stats.json`,
and the manifest. Under `accelerate launch` every process trains; only the main process writes.
The data is `data.py`'s, the trainer `trainer.py`'s; see docs/training.md.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..distributed import process_state
from ..errors import UserError
from ..models import check_model_reference
from ..rundir import StageRun, atomic_write_json, atomic_write_text
from .data import load_training_data, source_fingerprints
from .trainer import (
    build_trainer,
    drop_incomplete_checkpoints,
    last_checkpoint,
    memory_plan,
    merge_adapter,
    peak_memory,
    resolve_setup,
    save_adapter,
    say,
    step_plan,
    throughput_callback,
)

if TYPE_CHECKING:
    from ..config import Recipe

__all__ = ["run"]


def run(recipe: Recipe, run_dir: Path, force: bool = False, *, callbacks: Sequence[Any] = ()) -> Path:
    """Train the adapter; returns run_dir/train. `callbacks` are extra transformers TrainerCallbacks."""
    import torch

    config = recipe.train
    if config is None:
        raise UserError("the recipe has no `train` section; add one to run the train stage")
    state = process_state()
    stage = StageRun(run_dir, "train", config=config, inputs=source_fingerprints(config, Path(run_dir)))
    if stage.is_current() and not force:
        say(f"skipped (up to date): {stage.dir}")
        return stage.dir
    # Setup, model path and data problems are found before the stage folder is touched, so a bad
    # rerun leaves a finished stage (adapter, checkpoints) as it was.
    setup = resolve_setup(config, cuda=torch.cuda.is_available(), world_size=state.num_processes)
    check_model_reference(config.model, "train.model", config.gguf_file)
    if config.tokenizer:
        check_model_reference(config.tokenizer, "train.tokenizer")
    dataset = load_training_data(config, Path(run_dir))

    checkpoints_dir = stage.dir / "checkpoints"
    fingerprint_file = checkpoints_dir / "fingerprint.txt"
    completed_before = stage.is_current()  # only with force: retrain from scratch, not resume the end
    same_run = fingerprint_file.is_file() and fingerprint_file.read_text().strip() == stage.fingerprint
    resume_from = last_checkpoint(checkpoints_dir) if same_run and not completed_before else None
    state.wait_for_everyone()  # every process decided before process 0 changes the folder
    if state.is_main_process:
        stage.start()
        if resume_from is None and checkpoints_dir.exists():
            shutil.rmtree(checkpoints_dir)
        elif resume_from is not None:
            drop_incomplete_checkpoints(checkpoints_dir)
        atomic_write_text(fingerprint_file, stage.fingerprint + "\n")
    state.wait_for_everyone()

    max_steps, num_epochs = step_plan(len(dataset), config.max_steps, config.num_epochs)
    throughput = throughput_callback()
    trainer = build_trainer(config, setup, dataset, checkpoints_dir, callbacks=[throughput, *callbacks],
                            max_steps=max_steps, num_epochs=num_epochs)
    say(f"{len(trainer.train_dataset)} examples, {setup.micro_batch_size} per forward x "
         f"{setup.gradient_accumulation_steps} accumulation x {setup.world_size} process(es) = "
         f"{config.effective_batch_size} per step; quantization {setup.quantization}, optimizer {setup.optimizer}, "
         f"attention {setup.attn_implementation}" + (f"; resuming from {resume_from.name}" if resume_from else ""))
    if setup.cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    adapter_dir = save_adapter(trainer, stage.dir / "adapter")
    peak_gib, peak_kind = peak_memory(setup.cuda)
    train_state = trainer.state
    losses = [entry["loss"] for entry in train_state.log_history if "loss" in entry]
    stats = {
        "examples": len(trainer.train_dataset),
        "steps": train_state.global_step,
        "epochs": round(train_state.epoch or 0.0, 4),
        "tokens_seen": train_state.num_input_tokens_seen,
        "session_tokens": throughput.tokens,
        "session_seconds": round(throughput.seconds, 3),
        "tokens_per_s": round(throughput.tokens / throughput.seconds, 1) if throughput.seconds else 0.0,
        "train_loss": result.metrics.get("train_loss"),
        "final_logged_loss": losses[-1] if losses else None,
        "peak_memory_gib": round(peak_gib, 3),
        "effective_batch_size": config.effective_batch_size,
        "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else 0,
    }
    details = {**asdict(setup), "peak_memory_kind": peak_kind, "padding_free": config.padding_free or config.packing,
               "packing": config.packing, "memory_plan": memory_plan(trainer)}
    history = list(train_state.log_history)
    del trainer, result
    gc.collect()
    if setup.cuda:
        torch.cuda.empty_cache()

    outputs = {"adapter": str(adapter_dir), "log_history": str(stage.dir / "log_history.json"),
               "stats": str(stage.dir / "stats.json"), "checkpoints": str(checkpoints_dir)}
    if state.is_main_process:
        atomic_write_json(stage.dir / "log_history.json", history)
        atomic_write_json(stage.dir / "stats.json", {**stats, "setup": details})
        if config.merge:
            say("merging the adapter into a bf16 copy of the base model")
            outputs["merged"] = str(merge_adapter(config, adapter_dir, stage.dir / "merged"))
        stage.finish(counts=stats, outputs=outputs, extra={"setup": details})
        say(f"{stats['steps']} steps, final loss {stats['final_logged_loss']}, adapter in {adapter_dir}")
    state.wait_for_everyone()
    return stage.dir
