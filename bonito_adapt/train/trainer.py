"""The trainer: what the recipe resolves to on this machine, TRL's SFTTrainer with LoRA on the target
model, and the adapter, merge and checkpoint files it leaves.

Defaults are the Bonito card's: 4-bit NF4 double-quant, bf16 compute, LoRA r=64 on every linear
layer but lm_head, paged AdamW 32-bit, 16 examples per step. Under `accelerate launch` every
process trains; only the main process writes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..distributed import process_state
from ..errors import UserError, missing_extra
from ..models import load_causal_lm, load_tokenizer
from ..rundir import follow_umask, fsync_tree
from .config import TrainConfig
from .memory import largest_forward_tokens, memory_plan_callback
from .varlen import VARLEN, register_varlen_attention, varlen_supported

__all__ = [
    "TrainSetup",
    "resolve_setup",
    "step_plan",
    "build_trainer",
    "save_adapter",
    "merge_adapter",
    "last_checkpoint",
    "drop_incomplete_checkpoints",
    "say",
    "peak_memory",
    "throughput_callback",
    "memory_plan",
    "PAPER_MAX_STEPS",
    "PAPER_ONE_EPOCH_BELOW",
]

# The paper's rule: 10,000 steps, or one epoch when there are fewer than 160,000 (= 10,000 x 16) examples.
PAPER_MAX_STEPS = 10_000
PAPER_ONE_EPOCH_BELOW = 160_000


def say(message: str) -> None:
    if process_state().is_main_process:
        print(f"train: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class TrainSetup:
    """What the recipe resolves to on this machine (printed where it differs from what was written)."""

    cuda: bool
    quantization: str  # "4bit" or "none"
    optimizer: str
    bf16: bool
    attn_implementation: str
    use_liger_kernel: bool
    world_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int


def _accumulation(effective: int, micro: int, world_size: int) -> int:
    per_step = micro * world_size
    if effective % per_step:
        choices = [m for m in range(1, effective + 1) if effective % (m * world_size) == 0]
        raise UserError(
            f"train.effective_batch_size {effective} is not divisible by micro_batch_size {micro} x {world_size} "
            f"process(es); set train.micro_batch_size to one of {', '.join(map(str, choices)) or 'none'} "
            "or change effective_batch_size"
        )
    return effective // per_step


def resolve_setup(config: TrainConfig, cuda: bool, world_size: int) -> TrainSetup:
    """Decide quantization, optimizer, precision, attention and batch bookkeeping; explain every change."""
    if config.quantization == "4bit" and not cuda:
        raise UserError(
            "train.quantization: 4bit (Q-LoRA, bitsandbytes) needs a CUDA GPU and none is visible; "
            "set train.quantization: auto (plain LoRA in fp32 here) or none"
        )
    if config.quantization == "auto":
        quantization = "4bit" if cuda else "none"
        if not cuda:
            say("no CUDA GPU, so no 4-bit: training plain LoRA in fp32 on CPU (quantization: auto)")
    else:
        quantization = config.quantization
    if quantization == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise missing_extra("bitsandbytes", "train")

    optimizer = config.optimizer
    if "paged" in optimizer or "bnb" in optimizer or "8bit" in optimizer:
        # The same AdamW without bitsandbytes' paging; found on the GPU check, where a plain-LoRA run with the
        # default optimizer stopped inside the Trainer, after generation, for want of bitsandbytes.
        if not cuda:
            say(f"{optimizer} needs CUDA (bitsandbytes); using adamw_torch on CPU")
            optimizer = "adamw_torch"
        elif importlib.util.find_spec("bitsandbytes") is None:
            say(f"{optimizer} needs bitsandbytes, which is not installed; using adamw_torch "
                "(pip install 'bonito_adapt[train]' for the paged optimizer)")
            optimizer = "adamw_torch"

    padding_free = config.padding_free or config.packing
    if config.attn_implementation == "auto":
        from transformers.utils import is_flash_attn_2_available

        if cuda and is_flash_attn_2_available():
            attn = "flash_attention_2"
        elif cuda and padding_free and varlen_supported():
            attn = VARLEN
        else:
            attn = "sdpa"
    else:
        attn = config.attn_implementation
        if attn == VARLEN and not varlen_supported():
            raise UserError("train.attn_implementation: varlen needs a CUDA GPU and torch >= 2.10 "
                            "(torch.nn.attention.varlen); set attn_implementation: auto or sdpa")

    if config.use_liger_kernel == "auto":
        problem = _liger_problem() if cuda else "unused without CUDA"
        liger = problem is None
        if problem and problem.startswith("not importable"):
            say(f"liger-kernel is installed but {problem}; training without it")
    else:
        liger = bool(config.use_liger_kernel)
        if liger and (problem := _liger_problem()):
            raise UserError(f"train.use_liger_kernel: true but liger-kernel is {problem}; "
                            "`pip install -U liger-kernel` or set use_liger_kernel: auto")

    micro = config.micro_batch_size
    if micro == "auto":  # the whole step in one forward per process (1 when the processes do not divide it)
        micro = config.effective_batch_size // world_size if config.effective_batch_size % world_size == 0 else 1
    accumulation = _accumulation(config.effective_batch_size, micro, world_size)
    return TrainSetup(
        cuda=cuda, quantization=quantization, optimizer=optimizer, bf16=cuda, attn_implementation=attn,
        use_liger_kernel=liger, world_size=world_size, micro_batch_size=micro,
        gradient_accumulation_steps=accumulation,
    )


def _liger_problem() -> str | None:
    """None when Liger's transformers patches import with this transformers; else why not."""
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        return "not installed"
    try:  # what Trainer imports when it applies the kernels; fails on liger/transformers mismatches
        importlib.import_module("liger_kernel.transformers.monkey_patch")
    except (ImportError, AttributeError) as error:  # missing module, or a name a version mismatch removed
        return f"not importable: {str(error).splitlines()[0][:160] if str(error) else type(error).__name__}"
    return None


def step_plan(num_examples: int, max_steps: int | None, num_epochs: float | None) -> tuple[int, float]:
    """`(max_steps, num_train_epochs)` for the Trainer; max_steps -1 means "train num_train_epochs".

    Unless the recipe sets one of them, the paper's rule: 10,000 steps, or one epoch when there
    are fewer than 160,000 examples.
    """
    if max_steps is not None:
        return max_steps, 1.0
    if num_epochs is not None:
        return -1, float(num_epochs)
    if num_examples < PAPER_ONE_EPOCH_BELOW:
        return -1, 1.0
    return PAPER_MAX_STEPS, 1.0


# ---------------------------------------------------------------------------------------------- trainer


def _load_model(config: TrainConfig, setup: TrainSetup):
    import torch

    if setup.attn_implementation == VARLEN:
        register_varlen_attention()
    kwargs: dict[str, Any] = {"attn_implementation": setup.attn_implementation}
    if setup.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            # Storage in bf16 (same bytes as uint8) lets FSDP shard the 4-bit weights with the rest.
            bnb_4bit_quant_storage=torch.bfloat16,
        )
        # Each process holds its own copy on its own GPU (DDP); device_map "auto" would split it.
        kwargs["device_map"] = {"": process_state().local_process_index}
    model = load_causal_lm(config.model, field="train.model", gguf_file=config.gguf_file,
                           dtype=torch.bfloat16 if setup.cuda else torch.float32,
                           trust_remote_code=config.trust_remote_code, **kwargs)
    model.config.use_cache = False  # no KV cache while training (and it conflicts with checkpointing)
    return model


def _truncate(dataset, max_length: int, max_prompt_length: int | None = None,
              max_completion_length: int | None = None):
    """Cut prepared examples: the prompt to its first `max_prompt_length` tokens, the completion to its first
    `max_completion_length` (the paper's source/target caps), the whole to `max_length`; drop those left
    without a loss token. The prompt is the run of -100 labels at the start.

    TRL would cut only the whole, and not at all in padding-free mode without packing.
    """
    def cut(example):
        ids, labels = example["input_ids"], example["labels"]
        prompt = next((i for i, label in enumerate(labels) if label != -100), len(labels))
        prompt_end = prompt if max_prompt_length is None else min(prompt, max_prompt_length)
        completion_end = len(ids) if max_completion_length is None else min(len(ids), prompt + max_completion_length)
        return {"input_ids": (ids[:prompt_end] + ids[prompt:completion_end])[:max_length],
                "labels": (labels[:prompt_end] + labels[prompt:completion_end])[:max_length]}

    dataset = dataset.map(cut)
    return dataset.filter(lambda ex: any(label != -100 for label in ex["labels"]))


_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                     "trackio": ("trackio",)}


def _check_trackers(trackers) -> None:
    for tracker in trackers:
        if not any(importlib.util.find_spec(package) for package in _TRACKER_PACKAGES[tracker]):
            raise UserError(f"train.report_to: {tracker} is not installed; `pip install {_TRACKER_PACKAGES[tracker][0]}` "
                            "or remove it from report_to")


def build_trainer(config: TrainConfig, setup: TrainSetup, dataset, checkpoints_dir: Path,
                  callbacks: Sequence[Any] = (), max_steps: int = -1, num_epochs: float = 1.0):
    """An SFTTrainer with LoRA on the target model, ready to `.train()`."""
    try:
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer
    except ImportError as error:
        raise missing_extra(error.name or "trl", "train") from None

    _check_trackers(config.report_to)
    if "tensorboard" in config.report_to:
        # transformers 5 takes the event-file folder only from this variable; beside the checkpoints, not in them
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(checkpoints_dir).parent / "tensorboard"))
    tokenizer = load_tokenizer(config.tokenizer or config.model, field="train.tokenizer",
                               gguf_file=config.gguf_file, trust_remote_code=config.trust_remote_code,
                               padding_side="right")
    if config.format == "chat" and not tokenizer.chat_template:
        raise UserError(f"train.format: chat but the tokenizer of {config.model!r} has no chat template; "
                        "use format: bonito")
    padding_free = config.padding_free or config.packing
    checkpointing = config.gradient_checkpointing is not False  # auto: on for every layer until the plan
    planner = None
    if config.gradient_checkpointing == "auto":
        planner = memory_plan_callback(config.max_memory_gib, cuda=setup.cuda, report=_report_plan)
    args = SFTConfig(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=setup.micro_batch_size,
        gradient_accumulation_steps=setup.gradient_accumulation_steps,
        max_steps=max_steps,
        num_train_epochs=num_epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=setup.optimizer,
        bf16=setup.bf16,
        use_cpu=not setup.cuda,  # also what lets torchrun/accelerate form a CPU process group (gloo)
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_liger_kernel=setup.use_liger_kernel,
        # Without packing the stage truncates itself (prompt and completion caps; see _truncate).
        max_length=config.max_length if config.packing else None,
        padding_free=padding_free,
        packing=config.packing,
        completion_only_loss=True,
        train_sampling_strategy="random" if padding_free else "group_by_length",
        include_num_input_tokens_seen="all" if padding_free else "non_padding",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=list(config.report_to) or "none",
        seed=config.seed,
        data_seed=config.seed,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient each step
    )
    peft_config = LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, bias="none", task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=_load_model(config, setup), args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[_checkpoints_follow_umask(), *([planner] if planner else []), *callbacks])
    if not config.packing:
        trainer.train_dataset = _truncate(trainer.train_dataset, config.max_length, config.max_prompt_length,
                                          config.max_completion_length)
    if len(trainer.train_dataset) == 0:
        raise UserError("train: no example has a completion token within train.max_length; raise max_length")
    if planner:
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        planner.tokens_per_forward = largest_forward_tokens(lengths, setup.micro_batch_size, padding_free,
                                                            config.packing, config.max_length)
        planner.autocast = trainer.accelerator.autocast  # the training precision
        planner.sharded = bool(getattr(trainer, "is_fsdp_enabled", False)
                               or getattr(trainer, "is_deepspeed_enabled", False))
    return trainer


def _report_plan(plan) -> None:
    say(f"memory plan: {plan.checkpointed} of {plan.layers} layers checkpointed for up to {plan.tokens_per_forward:,} "
        f"tokens per forward, estimated peak {plan.estimated_peak_gib} GiB of a {plan.budget_gib} GiB budget "
        f"({plan.reason})")


# ---------------------------------------------------------------------------------------------- outputs


def _complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last, and not atomically: complete means it parses."""
    try:
        return "global_step" in json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (one with a readable trainer state), or None."""
    found = []
    for path in Path(checkpoints_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and _complete_checkpoint(path):
            found.append((int(step), path))
    return max(found)[1] if found else None


def drop_incomplete_checkpoints(checkpoints_dir: Path) -> None:
    """Remove checkpoint folders a kill left half-written (the resumed run writes them again)."""
    for path in Path(checkpoints_dir).glob("checkpoint-*"):
        if path.is_dir() and not _complete_checkpoint(path):
            shutil.rmtree(path, ignore_errors=True)


def _checkpoints_follow_umask():
    from transformers import TrainerCallback

    class CheckpointModes(TrainerCallback):
        """Each saved checkpoint's files get the umask's mode (see rundir.follow_umask)."""

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                follow_umask(checkpoint)

    return CheckpointModes()


def _replace_dir(tmp: Path, final: Path) -> None:
    follow_umask(tmp)
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def save_adapter(trainer, adapter_dir: Path) -> Path:
    """Save the PEFT adapter and tokenizer (every process must call it: FSDP gathers the weights)."""
    tmp = adapter_dir.with_name(adapter_dir.name + ".partial")
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # writes adapter_config.json + adapter weights + tokenizer on process 0
    if trainer.is_world_process_zero():
        (tmp / "training_args.bin").unlink(missing_ok=True)
        _replace_dir(tmp, adapter_dir)
    trainer.accelerator.wait_for_everyone()
    return adapter_dir


def merge_adapter(config: TrainConfig, adapter_dir: Path, merged_dir: Path) -> Path:
    """Fold the adapter into a bf16 copy of the base model (on CPU, so the GPU memory is not needed)."""
    import torch
    from peft import PeftModel

    base = load_causal_lm(config.model, field="train.model", gguf_file=config.gguf_file, dtype=torch.bfloat16,
                          trust_remote_code=config.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tokenizer = load_tokenizer(str(adapter_dir), field="train.adapter")
    tmp = merged_dir.with_name(merged_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    _replace_dir(tmp, merged_dir)
    return merged_dir


def peak_memory(cuda: bool) -> tuple[float, str]:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_max_rss"  # KiB on Linux


def memory_plan(trainer) -> dict | None:
    """The plan gradient_checkpointing: auto applied in this session, if any."""
    plan = next((callback.plan for callback in trainer.callback_handler.callbacks
                 if getattr(callback, "plan", None) is not None), None)
    return plan.as_dict() if plan else None


def throughput_callback():
    from transformers import TrainerCallback

    class Throughput(TrainerCallback):
        """Tokens and seconds of this session (a resumed run counts only what it trained itself)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.tokens_start, self.time_start = state.num_input_tokens_seen, time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.tokens = state.num_input_tokens_seen - self.tokens_start
            self.seconds = time.perf_counter() - self.time_start

    return Throughput()
