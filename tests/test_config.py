"""Recipe schema: defaults, overrides, path resolution, and one-line errors."""

import pytest

from bonito_adapt.config import load_recipe, parse_overrides
from bonito_adapt.errors import UserError

MINIMAL = {
    "name": "t",
    "output_dir": "runs/t",
    "generate": {"input": {"files": ["corpus"]}, "task_type": "nli"},
}


def test_defaults_follow_bonito_card(write_recipe):
    recipe = load_recipe(write_recipe({**MINIMAL, "train": {}, "evaluate": {"tasks": ["pubmed_qa"]}}))
    sampling = recipe.generate.sampling
    assert (sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens) == (1, 0.5, 0.95, 256)
    train = recipe.train
    assert (train.lora.r, train.lora.alpha, train.lora.dropout) == (64, 4.0, 0.0)
    assert (train.learning_rate, train.weight_decay, train.max_grad_norm) == (1e-4, 0.0, 0.3)
    assert (train.effective_batch_size, train.max_length, train.optimizer) == (16, 2048, "paged_adamw_32bit")
    assert train.quantization == "4bit" and train.lr_scheduler == "linear"
    assert recipe.stages() == ["generate", "train", "evaluate"]


def test_relative_paths_resolve_against_recipe_folder(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(MINIMAL))
    assert recipe.output_dir == str(tmp_path / "runs" / "t")
    assert recipe.generate.input.files == [str(tmp_path / "corpus")]
    assert recipe.generate.model == "BatsResearch/Llama-3.1-8B-bonito-v1"  # hub ids stay ids


def test_overrides_beat_yaml(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL), ["generate.sampling.n=3", "generate.task_type=exqa", "seed=7"])
    assert recipe.generate.sampling.n == 3 and recipe.generate.task_type == "exqa" and recipe.seed == 7


def test_recipe_seed_seeds_every_stage_that_sets_none(write_recipe):
    stages = {"train": {}, "evaluate": {"tasks": ["pubmed_qa"]}}
    recipe = load_recipe(write_recipe({**MINIMAL, **stages, "seed": 7}), ["train.seed=3"])
    assert (recipe.generate.sampling.seed, recipe.train.seed, recipe.evaluate.seed) == (7, 3, 7)
    unseeded = load_recipe(write_recipe({**MINIMAL, **stages}))  # no global seed: each stage's default
    assert (unseeded.generate.sampling.seed, unseeded.train.seed, unseeded.evaluate.seed) == (0, 42, 1234)


def test_parse_overrides_nested_and_typed():
    assert parse_overrides(["a.b.c=1", "a.b.d=[x, y]", "e=true"]) == {"a": {"b": {"c": 1, "d": ["x", "y"]}}, "e": True}
    with pytest.raises(UserError, match="not key=value"):
        parse_overrides(["novalue"])


@pytest.mark.parametrize(
    "content, expected",
    [
        ({**MINIMAL, "generat": {}}, r"generat: unknown key"),
        ({**MINIMAL, "generate": {**MINIMAL["generate"], "task_type": "nlii"}}, r"generate.task_type: unknown task type 'nlii'"),
        ({**MINIMAL, "generate": {**MINIMAL["generate"], "sampling": {"n": "many"}}}, r"generate.sampling.n: .*integer"),
        ({**MINIMAL, "generate": {"task_type": "nli", "input": {}}}, r"generate.input: .*exactly one of `dataset`"),
        ({"name": "t"}, r"output_dir: required field is missing"),
        ("name: [unclosed\n", r"not valid YAML at line \d+"),
        ("- a\n- b\n", r"must be a YAML mapping"),
    ],
)
def test_bad_recipes_give_one_line(write_recipe, content, expected):
    with pytest.raises(UserError, match=expected) as info:
        load_recipe(write_recipe(content))
    assert "\n" not in str(info.value)


def test_all_problems_reported_at_once(write_recipe):
    bad = {**MINIMAL, "extra": 1, "generate": {**MINIMAL["generate"], "task_type": "zzz"}}
    with pytest.raises(UserError) as info:
        load_recipe(write_recipe(bad))
    assert "extra: unknown key" in str(info.value) and "generate.task_type" in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
