"""gradient_checkpointing: auto on CPU with a small random Llama: the probe's measurement, the plan's
arithmetic, the layers it leaves whole, and losses equal to checkpointing every layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data import make_tasks, write_jsonl  # noqa: E402

from bonito_adapt import train
from bonito_adapt.config import Recipe
from bonito_adapt.train.memory import (
    SAFETY,
    ActivationProfile,
    decoder_layers,
    largest_forward_tokens,
    measure_activations,
    plan_layers,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HIDDEN, LAYERS = 64, 4


@pytest.fixture(scope="module")
def four_layer_dir(tiny_tokenizer, tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=HIDDEN, intermediate_size=128,
                         num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tiny_tokenizer.bos_token_id,
                         eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                         initializer_range=0.5)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("four-layer-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def _model(path: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the older name before
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def test_probe_measures_what_each_layer_keeps_and_it_scales_with_tokens(four_layer_dir):
    model = _model(four_layer_dir)
    vocab = model.get_input_embeddings().num_embeddings
    short, long = measure_activations(model, vocab, tokens=64), measure_activations(model, vocab, tokens=256)
    assert len(short.per_layer) == LAYERS
    # A checkpointed layer keeps its input hidden states: hidden_size fp32 values per token.
    assert short.layer_input == [HIDDEN * 4.0] * LAYERS
    # A whole layer keeps far more (norms, q/k/v, attention, the MLP's gate/up/act): at least 8 hidden-sized
    # and 3 intermediate-sized fp32 vectors per token.
    assert all(kept >= (8 * HIDDEN + 3 * 128) * 4 for kept in short.per_layer)
    assert short.outside >= vocab * 4  # the fp32 logits the loss keeps
    for a, b in zip(short.per_layer, long.per_layer, strict=True):
        assert abs(a - b) / b < 0.05  # per-token cost independent of length: the linear extrapolation holds
    assert all(layer.gradient_checkpointing for layer in decoder_layers(model))  # flags put back


def test_plan_arithmetic_leaves_the_last_layers_whole_as_far_as_the_budget_goes():
    profile = ActivationProfile(per_layer=[100.0] * 4, layer_input=[10.0] * 4, outside=50.0, probe_tokens=64)
    tokens, static = 1000, 1_000_000
    base = static + 50 * tokens + 4 * 10 * tokens + 100 * tokens  # inputs kept + one layer recomputed
    for whole in range(5):
        peak = base + whole * 90 * tokens - (100 * tokens if whole == 4 else 0)
        plan = plan_layers(profile, tokens, static, budget=(base + whole * 90 * tokens + 1) / SAFETY)
        assert plan.checkpointed == 4 - whole, whole
        assert plan.estimated_peak_gib == round(peak / 2**30, 2)
    assert "over the budget" in plan_layers(profile, tokens, static, budget=static).reason


def test_largest_forward_bounds_every_batch_the_data_can_form():
    lengths = [5, 50, 20, 40, 10]
    assert largest_forward_tokens(lengths, 2, padding_free=True, packing=False, max_length=64) == 90
    assert largest_forward_tokens(lengths, 2, padding_free=False, packing=False, max_length=64) == 100
    assert largest_forward_tokens(lengths, 2, padding_free=True, packing=True, max_length=64) == 128


def _recipe(run_dir: Path, model_dir: Path, data: Path, **fields) -> Recipe:
    train_fields = {"model": str(model_dir), "quantization": "auto", "datasets": [{"path": str(data)}],
                    "max_length": 128, "logging_steps": 1, "max_steps": 3, "effective_batch_size": 4,
                    "micro_batch_size": 4, "learning_rate": 1e-2, **fields}
    return Recipe.model_validate({"name": "t", "output_dir": str(run_dir), "train": train_fields})


def test_auto_with_a_budget_checkpoints_some_layers_and_trains_the_same(tmp_path, four_layer_dir):
    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(12))
    roomy = _recipe(tmp_path / "roomy", four_layer_dir, data, max_memory_gib=1000)
    plan = _plan(train.run(roomy, roomy.run_dir))
    assert plan["checkpointed"] == 0 and plan["tokens_per_forward"] > 0

    # A budget that fits the last two layers whole, from the measurement the stage made.
    profile, tokens = plan["profile"], plan["tokens_per_forward"]
    base = plan["static_bytes"] + (profile["outside"] + sum(profile["layer_input"]) + max(profile["per_layer"])) * tokens
    two_layers = sum(profile["per_layer"][i] - profile["layer_input"][i] for i in (2, 3)) * tokens
    budget_gib = (base + two_layers * 1.01) / SAFETY / 2**30
    seen_flags = []

    from transformers import TrainerCallback

    class Flags(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen_flags.append([layer.gradient_checkpointing for layer in decoder_layers(model)])

    planned = _recipe(tmp_path / "auto", four_layer_dir, data, max_memory_gib=budget_gib)
    plan = _plan(train.run(planned, planned.run_dir, callbacks=[Flags()]))
    assert plan["checkpointed"] == 2 and "2 of 4" in plan["reason"]
    assert len(seen_flags) == 3 and all(flags == [True, True, False, False] for flags in seen_flags)

    for name, setting in (("all", True), ("none", False)):
        recipe = _recipe(tmp_path / name, four_layer_dir, data, gradient_checkpointing=setting)
        train.run(recipe, recipe.run_dir)
    losses = {name: [e["loss"] for e in json.loads((tmp_path / name / "train" / "log_history.json").read_text())
                     if "loss" in e] for name in ("all", "auto", "none", "roomy")}
    assert len(losses["all"]) == 3
    for name in ("auto", "none", "roomy"):
        assert losses[name] == pytest.approx(losses["all"], rel=1e-5), name  # fp32: the recompute is exact


def _plan(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "stats.json").read_text())["setup"]["memory_plan"]


def test_auto_on_cpu_without_a_cap_checkpoints_every_layer(tmp_path, four_layer_dir):
    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(4))
    recipe = _recipe(tmp_path / "run", four_layer_dir, data, max_steps=1)
    assert recipe.train.gradient_checkpointing == "auto"
    stage_dir = train.run(recipe, recipe.run_dir)
    assert json.loads((stage_dir / "stats.json").read_text())["setup"]["memory_plan"] is None
