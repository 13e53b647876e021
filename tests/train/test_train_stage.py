"""Train stage on CPU with the tiny random Llama: formatting and loss masks, batch bookkeeping,
the paper's step rule, CPU fallbacks, adapter reload, resume after a stop, merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data import make_tasks, write_jsonl  # noqa: E402

from bonito_adapt import train
from bonito_adapt.cli import main
from bonito_adapt.config import Recipe
from bonito_adapt.errors import UserError
from bonito_adapt.rundir import StageRun, read_manifest
from bonito_adapt.train import data as train_data
from bonito_adapt.train import trainer as trainer_module
from bonito_adapt.train.config import TrainConfig
from bonito_adapt.train.data import training_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def learnable_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Llama re-initialised with larger weights: with std 0.02 its frozen lm_head gives logits
    so flat that no LoRA update can lower the loss much; with 0.5 a few steps visibly learn."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("learnable-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def recipe_for(run_dir: Path, model_dir: Path, data: str, **train_fields) -> Recipe:
    fields = {"model": str(model_dir), "quantization": "auto", "datasets": [{"path": data}],
              "max_length": 128, "logging_steps": 1, **train_fields}
    return Recipe.model_validate({"name": "t", "output_dir": str(run_dir), "train": fields})


# ------------------------------------------------------------------------------------- pure rules


def test_paper_step_rule():
    assert trainer_module.step_plan(159_999, None, None) == (-1, 1.0)  # one epoch below 160,000 examples
    assert trainer_module.step_plan(160_000, None, None) == (10_000, 1.0)
    assert trainer_module.step_plan(2_000_000, None, None) == (10_000, 1.0)
    assert trainer_module.step_plan(50, 7, None) == (7, 1.0)  # explicit max_steps wins
    assert trainer_module.step_plan(500_000, None, 2.5) == (-1, 2.5)


@pytest.mark.parametrize(("micro", "world", "accumulation"), [(4, 1, 4), (16, 1, 1), (1, 1, 16), (4, 2, 2), (2, 8, 1)])
def test_effective_batch_is_micro_x_accumulation_x_processes(micro, world, accumulation):
    setup = trainer_module.resolve_setup(TrainConfig(quantization="none", micro_batch_size=micro), cuda=False, world_size=world)
    assert setup.gradient_accumulation_steps == accumulation
    assert setup.micro_batch_size * setup.gradient_accumulation_steps * world == 16


@pytest.mark.parametrize(("world", "micro"), [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)])
def test_auto_micro_batch_is_the_whole_step_per_process(world, micro):
    setup = trainer_module.resolve_setup(TrainConfig(quantization="none"), cuda=False, world_size=world)
    assert (setup.micro_batch_size, setup.gradient_accumulation_steps) == (micro, 1)


def test_auto_micro_batch_with_processes_not_dividing_the_batch_is_one_line_error():
    with pytest.raises(UserError, match="effective_batch_size 16 is not divisible") as error:
        trainer_module.resolve_setup(TrainConfig(quantization="none"), cuda=False, world_size=3)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("micro", "world"), [(3, 1), (4, 3), (32, 1)])
def test_effective_batch_not_divisible_is_one_line_error(micro, world):
    with pytest.raises(UserError) as error:
        trainer_module.resolve_setup(TrainConfig(quantization="none", micro_batch_size=micro), cuda=False, world_size=world)
    message = str(error.value)
    assert "\n" not in message and "micro_batch_size" in message and "effective_batch_size 16" in message


def test_cpu_fallbacks_are_announced_and_4bit_is_refused(capsys):
    with pytest.raises(UserError, match="4bit.*CUDA.*quantization: auto"):
        trainer_module.resolve_setup(TrainConfig(quantization="4bit"), cuda=False, world_size=1)
    setup = trainer_module.resolve_setup(TrainConfig(quantization="auto"), cuda=False, world_size=1)
    assert (setup.quantization, setup.optimizer, setup.bf16) == ("none", "adamw_torch", False)
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 2
    assert "plain LoRA in fp32 on CPU" in printed[0] and "adamw_torch" in printed[1]
    # With CUDA the card's recipe stays as written.
    gpu = trainer_module.resolve_setup(TrainConfig(quantization="auto"), cuda=True, world_size=1)
    assert (gpu.quantization, gpu.optimizer, gpu.bf16) == ("4bit", "paged_adamw_32bit", True)
    assert capsys.readouterr().err == ""


def test_4bit_without_cuda_exits_2_with_one_line(tmp_path, tiny_model_dir, write_recipe, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(4))
    recipe = write_recipe({"name": "t", "output_dir": str(tmp_path / "run"),
                           "train": {"model": str(tiny_model_dir), "quantization": "4bit",
                                     "datasets": [{"path": str(data)}]}})
    assert main(["run", str(recipe), "--stages", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4bit" in err and "quantization: auto" in err


# ------------------------------------------------------------------------------------- data


def test_missing_columns_name_the_dataset_and_its_columns(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q?", "answer": "a"}])
    config = TrainConfig(datasets=[{"path": str(data)}])
    with pytest.raises(UserError) as error:
        train_data.load_training_data(config, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "qa.jsonl" in message and "'input'" in message and "question, answer" in message
    renamed = TrainConfig(datasets=[{"path": str(data), "input_col": "question", "output_col": "answer"}])
    assert train_data.load_training_data(renamed, tmp_path)[0] == {"prompt": training_prompt("q?"), "completion": "a"}


def test_generate_output_and_files_mix_by_weight(tmp_path):
    from datasets import Dataset

    run_dir = tmp_path / "run"
    generated = [{"input": f"g{i}", "output": "x", "task_type": "nli", "context": "c", "source_id": str(i)}
                 for i in range(300)]
    Dataset.from_list(generated).save_to_disk(str(run_dir / "generate" / "dataset"))
    manifest = StageRun(run_dir, "generate", config={"k": 1}, inputs={}).finish()
    general = write_jsonl(tmp_path / "general.jsonl", [{"input": f"h{i}", "output": "y"} for i in range(300)])
    config = TrainConfig(datasets=[{"path": "generate", "weight": 3}, {"path": str(general), "weight": 1}])

    assert train_data.source_fingerprints(config, run_dir)["datasets[0]"] == manifest["fingerprint"]
    mixed = train_data.load_training_data(config, run_dir)
    share = sum(p.startswith(training_prompt("g")[:10]) and "\ng" in p for p in mixed["prompt"]) / len(mixed)
    assert 0.68 < share < 0.82  # weights 3:1, sampled until the first source runs out
    assert mixed["prompt"] == train_data.load_training_data(config, run_dir)["prompt"]  # same seed, same mixture


# ------------------------------------------------------------------------------------- trainer


def built_trainer(tmp_path, model_dir, rows, **fields):
    config = TrainConfig(model=str(model_dir), quantization="none", max_length=128,
                         datasets=[{"path": str(write_jsonl(tmp_path / "tasks.jsonl", rows))}], **fields)
    setup = trainer_module.resolve_setup(config, cuda=False, world_size=1)
    dataset = train_data.load_training_data(config, tmp_path)
    return trainer_module.build_trainer(config, setup, dataset, tmp_path / "checkpoints", max_steps=3), config


def completion_only(example) -> list[int]:
    return [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]


def test_prompt_and_completion_caps_cut_each_part_from_its_start(tmp_path, tiny_model_dir):
    """max_prompt_length / max_completion_length: the paper's source and target caps (first tokens of each),
    then max_length on the whole; surrounding whitespace of input and output is stripped, as the paper does."""
    rows = [{"input": f"  {row['input']} word word word word\n", "output": f" {row['output']} and more words "}
            for row in make_tasks(4)]
    trainer, _ = built_trainer(tmp_path, tiny_model_dir, rows, max_prompt_length=6, max_completion_length=3,
                               optimizer="adamw_torch")
    tokenizer = trainer.processing_class
    for row, example in zip(rows, (trainer.train_dataset[i] for i in range(len(rows))), strict=True):
        prompt_ids = tokenizer(training_prompt(row["input"].strip()))["input_ids"]
        full_ids = tokenizer(training_prompt(row["input"].strip()) + row["output"].strip() + tokenizer.eos_token)["input_ids"]
        assert len(prompt_ids) > 6 and len(full_ids) - len(prompt_ids) > 3
        assert example["input_ids"] == prompt_ids[:6] + full_ids[len(prompt_ids):][:3]
        assert example["labels"] == [-100] * 6 + full_ids[len(prompt_ids):][:3]
    with pytest.raises(ValueError, match="packing"):
        TrainConfig(model=str(tiny_model_dir), packing=True, max_prompt_length=8)


def test_labels_are_exactly_the_completion_and_eos_then_adapter_reloads(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = make_tasks(8)
    trainer, config = built_trainer(tmp_path, tiny_model_dir, rows, micro_batch_size=4, optimizer="adamw_torch")
    tokenizer = trainer.processing_class
    assert trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps == 16
    assert trainer.args.gradient_accumulation_steps == 4

    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    for row, example in zip(rows, examples, strict=True):
        prompt_ids = tokenizer(training_prompt(row["input"]))["input_ids"]
        full_ids = tokenizer(training_prompt(row["input"]) + row["output"] + tokenizer.eos_token)["input_ids"]
        assert example["input_ids"] == full_ids and full_ids[: len(prompt_ids)] == prompt_ids
        expected = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
        assert example["labels"] == expected  # token by token: prompt masked, completion + EOS kept
        assert tokenizer.decode(completion_only(example)) == row["output"] + tokenizer.eos_token

    # The trainer's real (padding-free) collator keeps exactly those labels, in one flattened row.
    batch = trainer.data_collator(examples[:4])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert batch["labels"][0].tolist() == [label for ex in examples[:4] for label in ex["labels"]]

    # Padding-free attention (block-diagonal from position_ids, with sdpa) gives the loss of padded batches.
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples[:4])
    model = trainer.model
    model.eval()
    with torch.no_grad():
        loss_free = trainer.compute_loss(model, dict(batch))
        loss_padded = trainer.compute_loss(model, dict(padded))
    assert torch.allclose(loss_free, loss_padded, atol=1e-5)

    model.train()
    trainer.train()
    adapter_dir = trainer_module.save_adapter(trainer, tmp_path / "adapter")
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "tokenizer.json").is_file()
    ids = torch.tensor([examples[0]["input_ids"]])
    model.eval()
    with torch.no_grad():
        trained_logits = model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        reloaded = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        reloaded_logits = reloaded(input_ids=ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
    assert torch.allclose(trained_logits, reloaded_logits, atol=1e-5)
    assert not torch.allclose(trained_logits, untouched, atol=1e-5)  # training changed something


def test_chat_format_masks_everything_but_the_assistant_turn(tmp_path, tiny_model_dir):
    rows = make_tasks(3)
    trainer, _ = built_trainer(tmp_path, tiny_model_dir, rows, format="chat")
    tokenizer = trainer.processing_class
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": row["input"]},
                                                  {"role": "assistant", "content": row["output"]}], tokenize=False)
        assert tokenizer.decode(example["input_ids"]) == rendered
        assert tokenizer.decode(completion_only(example)) == row["output"] + "<|im_end|>\n"


# ------------------------------------------------------------------------------------- the stage


def test_stage_trains_loss_goes_down_and_merges(tmp_path, learnable_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(8))
    recipe = recipe_for(tmp_path / "run", learnable_model_dir, str(data), num_epochs=12, learning_rate=2e-2,
                        effective_batch_size=4, micro_batch_size=4, lora={"r": 8, "alpha": 16}, merge=True)
    stage_dir = train.run(recipe, recipe.run_dir)

    history = json.loads((stage_dir / "log_history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 24 and all("learning_rate" in e and "grad_norm" in e for e in history if "loss" in e)
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    stats = json.loads((stage_dir / "stats.json").read_text())
    manifest = read_manifest(stage_dir)
    assert stats["steps"] == manifest["counts"]["steps"] == 24  # 12 epochs of 8 examples, 4 per step
    assert stats["examples"] == 8 and stats["tokens_seen"] > 0 and stats["peak_memory_gib"] > 0
    assert manifest["setup"]["quantization"] == "none" and manifest["setup"]["optimizer"] == "adamw_torch"

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(stage_dir / "merged")
        assert merged.dtype == torch.bfloat16
        merged_logits = merged(input_ids=ids).logits.float()
        base = AutoModelForCausalLM.from_pretrained(learnable_model_dir)
        base_logits = base(input_ids=ids).logits
        adapted_logits = PeftModel.from_pretrained(base, str(stage_dir / "adapter")).eval()(input_ids=ids).logits
    # Equal up to the bf16 rounding of the merged weights, and clearly not the base model.
    assert (merged_logits - adapted_logits).abs().max() < 0.05 * adapted_logits.abs().max()
    assert (merged_logits - base_logits).abs().max() > 10 * (merged_logits - adapted_logits).abs().max()
    assert train.run(recipe, recipe.run_dir) == stage_dir  # up to date: skipped
    assert read_manifest(stage_dir)["fingerprint"] == manifest["fingerprint"]


class Stop(Exception):
    pass


def stop_after_saving(step: int):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Stop(f"killed after saving step {step}")

    return StopAfterSave()


def test_resume_after_a_stop_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(16))
    fields = {"max_steps": 4, "save_steps": 1, "effective_batch_size": 4, "micro_batch_size": 2,
              "learning_rate": 1e-2}
    straight = recipe_for(tmp_path / "straight", tiny_model_dir, str(data), **fields)
    interrupted = recipe_for(tmp_path / "interrupted", tiny_model_dir, str(data), **fields)

    train.run(straight, straight.run_dir)
    with pytest.raises(Stop):
        train.run(interrupted, interrupted.run_dir, callbacks=[stop_after_saving(2)])
    stage_dir = interrupted.run_dir / "train"
    assert read_manifest(stage_dir) is None
    assert trainer_module.last_checkpoint(stage_dir / "checkpoints").name == "checkpoint-2"

    train.run(interrupted, interrupted.run_dir)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["resumed_from_step"] == 2 and stats["steps"] == 4
    steps_logged = [e["step"] for e in json.loads((stage_dir / "log_history.json").read_text()) if "loss" in e]
    assert steps_logged == [1, 2, 3, 4]
    resumed = load_file(stage_dir / "adapter" / "adapter_model.safetensors")
    uninterrupted = load_file(straight.run_dir / "train" / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, weight in uninterrupted.items():
        assert resumed[name].equal(weight), name  # same data order, RNG and optimizer state: bit-identical


def test_execution_settings_resume_the_checkpoints_result_settings_restart(tmp_path, tiny_model_dir):
    """micro_batch_size (the out-of-memory fix) and log/save cadence change how the same
    steps are computed: a stopped run resumes from its checkpoint with new values and ends where an
    uninterrupted run ends; once finished, such a change is up to date. learning_rate restarts."""
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(16))
    fields = {"max_steps": 4, "save_steps": 1, "effective_batch_size": 4, "micro_batch_size": 4,
              "learning_rate": 1e-2}
    straight = recipe_for(tmp_path / "straight", tiny_model_dir, str(data), **fields)
    train.run(straight, straight.run_dir)
    interrupted = recipe_for(tmp_path / "interrupted", tiny_model_dir, str(data), **fields)
    with pytest.raises(Stop):
        train.run(interrupted, interrupted.run_dir, callbacks=[stop_after_saving(2)])

    smaller = recipe_for(tmp_path / "interrupted", tiny_model_dir, str(data),
                         **{**fields, "micro_batch_size": 1, "logging_steps": 2, "save_steps": 3})
    stage_dir = train.run(smaller, smaller.run_dir)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["resumed_from_step"] == 2 and stats["steps"] == 4
    assert read_manifest(stage_dir)["setup"]["gradient_accumulation_steps"] == 4
    assert read_manifest(stage_dir)["execution"]["micro_batch_size"] == 1
    resumed = load_file(stage_dir / "adapter" / "adapter_model.safetensors")
    for name, weight in load_file(straight.run_dir / "train" / "adapter" / "adapter_model.safetensors").items():
        assert torch_allclose(resumed[name], weight), name  # same examples per step, other batching: fp32 noise

    before = (stage_dir / "manifest.json").read_text()
    assert train.run(recipe_for(tmp_path / "interrupted", tiny_model_dir, str(data),
                                **{**fields, "micro_batch_size": 2}), smaller.run_dir) == stage_dir
    assert (stage_dir / "manifest.json").read_text() == before  # up to date: skipped
    faster = recipe_for(tmp_path / "interrupted", tiny_model_dir, str(data), **{**fields, "learning_rate": 2e-2})
    train.run(faster, faster.run_dir)
    assert json.loads((stage_dir / "stats.json").read_text())["resumed_from_step"] == 0


def torch_allclose(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
def test_qlora_4bit_on_cuda(tmp_path, tiny_model_dir):
    """On the device: BONITO_ADAPT_GPU_MODEL=/path/to/random-mistral-7b for the real shape (see docs)."""
    import os

    import torch
    from _train_utils import write_bonito_like_tasks

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model_dir = os.environ.get("BONITO_ADAPT_GPU_MODEL", str(tiny_model_dir))
    data = write_bonito_like_tasks(tmp_path / "tasks.jsonl", 96)
    recipe = recipe_for(tmp_path / "run", Path(model_dir), str(data), quantization="4bit", max_steps=6,
                        max_length=2048 if "BONITO_ADAPT_GPU_MODEL" in os.environ else 1024)
    stage_dir = train.run(recipe, recipe.run_dir)
    manifest = read_manifest(stage_dir)
    print(json.dumps(manifest["counts"]), json.dumps(manifest["setup"]))
    assert manifest["setup"]["quantization"] == "4bit" and manifest["setup"]["optimizer"] == "paged_adamw_32bit"
    assert manifest["counts"]["steps"] == 6 and manifest["setup"]["bf16"]
    assert (stage_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_two_processes_under_torchrun_train_like_one(tmp_path, learnable_model_dir, write_recipe):
    """DDP on CPU (gloo): 2 processes x micro 2 x accumulation 2 = the same 8 examples per step as one
    process x micro 2 x accumulation 4; only process 0 writes the adapter and the manifest."""
    import os
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(8))
    fields = {"model": str(learnable_model_dir), "quantization": "auto", "datasets": [{"path": str(data)}],
              "max_steps": 3, "micro_batch_size": 2, "effective_batch_size": 8, "max_length": 128,
              "logging_steps": 1, "learning_rate": 1e-2}
    recipe_file = write_recipe({"name": "ddp", "output_dir": str(tmp_path / "ddp"), "train": fields})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "bonito_adapt", "run", str(recipe_file), "--stages", "train"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 per forward x 2 accumulation x 2 process(es)" in result.stderr
    assert result.stderr.count("adapter in") == 1  # only process 0 reports (and writes)

    single = recipe_for(tmp_path / "single", learnable_model_dir, str(data), **{
        k: v for k, v in fields.items() if k not in ("model", "datasets", "quantization")})
    train.run(single, single.run_dir)
    ddp_stats = json.loads((tmp_path / "ddp" / "train" / "stats.json").read_text())
    single_stats = json.loads((single.run_dir / "train" / "stats.json").read_text())
    assert ddp_stats["setup"]["world_size"] == 2 and ddp_stats["setup"]["gradient_accumulation_steps"] == 2
    assert ddp_stats["steps"] == single_stats["steps"] == 3
    assert ddp_stats["final_logged_loss"] == pytest.approx(single_stats["final_logged_loss"], rel=1e-4)
    ddp_weights = load_file(tmp_path / "ddp" / "train" / "adapter" / "adapter_model.safetensors")
    for name, weight in load_file(single.run_dir / "train" / "adapter" / "adapter_model.safetensors").items():
        assert torch.allclose(ddp_weights[name], weight, atol=1e-5), name  # all-reduce order: not bit-equal


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"])
def test_accelerate_configs_load_and_give_the_launch_command(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[2] / "recipes" / "accelerate" / name
    config = load_config_from_file(str(path))
    assert config.num_machines == 1 and config.mixed_precision == "bf16"
    header = " ".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert f"accelerate launch --config_file recipes/accelerate/{name}" in header
    assert "-m bonito_adapt run" in header and "--stages train" in header


def test_paged_optimizer_without_bitsandbytes_falls_back_to_adamw(monkeypatch, capsys):
    """On a GPU without bitsandbytes, plain LoRA with the default paged optimizer trains with AdamW instead
    of stopping inside the Trainer (seen on the device: after the generate stage had run)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    setup = trainer_module.resolve_setup(TrainConfig(quantization="none"), cuda=True, world_size=1)
    assert setup.optimizer == "adamw_torch" and setup.quantization == "none"
    assert "needs bitsandbytes, which is not installed" in capsys.readouterr().err
    with pytest.raises(UserError, match="bitsandbytes is not installed"):
        trainer_module.resolve_setup(TrainConfig(quantization="4bit"), cuda=True, world_size=1)


def test_report_to_tensorboard_writes_event_files(tmp_path, tiny_model_dir, monkeypatch):
    """train.report_to reaches the Trainer as TRL passes it; tensorboard's event files land in train/tensorboard
    and hold the logged loss. A tracker that is not installed is a one-line error before training."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(8))
    recipe = recipe_for(tmp_path / "run", tiny_model_dir, str(data), max_steps=2, effective_batch_size=4,
                        report_to=["tensorboard"], optimizer="adamw_torch")
    stage_dir = train.run(recipe, recipe.run_dir)
    events = list((stage_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2]

    from bonito_adapt.train import trainer as trainer_module_

    monkeypatch.setattr(trainer_module_, "_TRACKER_PACKAGES", {**trainer_module_._TRACKER_PACKAGES,
                                                                "wandb": ("no_such_wandb_package",)})
    with pytest.raises(UserError, match="train.report_to: wandb is not installed"):
        trainer_module_._check_trackers(["wandb"])
