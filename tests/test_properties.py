"""Property tests (hypothesis): the recipe parser and the Bonito output parser on arbitrary input.

- Recipe files and `key=value` overrides of any text either load or raise UserError with a one-line
  message, never anything else; valid generated recipes load to the values written, and the copy a
  run writes (`recipe.yaml` in the run directory) loads back to the same recipe.
- `parse_bonito_output` never raises and follows the original bonito package's rules: None unless
  the text has exactly one `<|pipe|>`; else both parts stripped and `{{context}}` in either part
  replaced by the stripped passage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonito_adapt.config import Recipe, load_recipe, parse_overrides
from bonito_adapt.errors import UserError
from bonito_adapt.generate.task_format import PIPE, TASK_TYPES, parse_bonito_output

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


def fragments(*pieces: str, text_size: int = 8):
    """Text built from meaningful pieces and arbitrary runs of characters."""
    return st.lists(st.one_of(st.sampled_from(pieces), st.text(max_size=text_size)), max_size=24).map("".join)


# ------------------------------------------------------------------------------------------ recipes

YAMLISH = fragments(
    "name: t\n", "output_dir: out\n", "generate:\n", "train:\n", "evaluate:\n", "report: {}\n", "  input:\n",
    "    files: [docs]\n", "  task_type: nli\n", "  sampling: {n: 2}\n", "  max_steps: ", "tasks: [a, b]\n",
    "seed: ", "- ", ": ", "  ", "\n", "\t", "[", "]", "{", "}", ",", "&a ", "*a", "!!python/object:os.system ",
    "!!binary ", "%YAML 1.2\n", "---\n", "...\n", "? ", "|\n", ">\n", "'", '"', "#", "~", "null", "1e999",
    "0x1F", ".inf", "\x00", "\ufeff", "é", "~nosuchuser/x", "output_dir: ~nosuchuser/x\n",
)


def _loads_or_user_error(path: Path, overrides: list[str] | None = None) -> Recipe | None:
    try:
        return load_recipe(path, overrides)
    except UserError as error:
        assert "\n" not in str(error), str(error)
        return None


@SETTINGS
@given(text=st.one_of(YAMLISH, st.text()))
def test_any_recipe_text_loads_or_is_a_one_line_user_error(folder, text):
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_user_error(path)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_recipe_bytes_load_or_are_a_one_line_user_error(folder, data):
    path = folder / "recipe.yaml"
    path.write_bytes(data)
    _loads_or_user_error(path)


KEYS = st.lists(st.sampled_from(["name", "output_dir", "seed", "generate", "train", "evaluate", "report", "input",
                                 "files", "task_type", "sampling", "n", "max_steps", "lora", "r", "tasks", "", " ",
                                 "x"]), min_size=1, max_size=4).map(".".join)
OVERRIDE = st.one_of(
    st.text(),
    st.builds(lambda key, value: f"{key}={value}", st.one_of(KEYS, st.text(max_size=10)),
              fragments("[", "]", "{", "}", ": ", "1", "-1", "true", "null", "nli", "'", '"', ",", "&a", "*a", "!!str",
                        "~nosuchuser/x", "\x00", "a" * 300)),
)


@SETTINGS
@given(overrides=st.lists(OVERRIDE, max_size=5))
def test_any_overrides_load_or_are_a_one_line_user_error(folder, overrides):
    path = folder / "valid.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "output_dir": "out",
                                    "generate": {"input": {"files": ["docs"]}, "task_type": "nli"},
                                    "train": {}, "evaluate": {"tasks": ["pubmed_qa"]}}))
    _loads_or_user_error(path, overrides)
    try:
        parse_overrides(overrides)
    except UserError as error:
        assert "\n" not in str(error)


NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
RELATIVE = st.lists(st.text("abcxyz019_-.", min_size=1, max_size=8).filter(lambda p: p not in (".", "..")),
                    min_size=1, max_size=3).map("/".join)


@st.composite
def recipes(draw) -> dict:
    recipe = {"name": draw(NAMES), "output_dir": draw(RELATIVE), "seed": draw(st.integers(-2**31, 2**31))}
    if draw(st.booleans()):
        recipe["generate"] = {
            "input": {"files": draw(st.lists(RELATIVE, min_size=1, max_size=3)),
                      "context_col": draw(st.sampled_from(["text", "body", "passage"]))},
            "task_type": draw(st.sampled_from([*TASK_TYPES, *TASK_TYPES.values()])),
            "shard_size": draw(st.integers(1, 10_000)),
            "sampling": {"n": draw(st.integers(1, 8)),
                         "temperature": draw(st.floats(0, 2, allow_nan=False)),
                         "top_p": draw(st.floats(0.01, 1.0)),
                         "max_tokens": draw(st.integers(1, 4096)),
                         "seed": draw(st.integers(0, 2**31))},
        }
    if draw(st.booleans()):
        recipe["train"] = {"max_steps": draw(st.one_of(st.none(), st.integers(1, 10**6))),
                           "learning_rate": draw(st.floats(1e-7, 1.0)),
                           "quantization": draw(st.sampled_from(["4bit", "none", "auto"])),
                           "lora": {"r": draw(st.integers(1, 256)), "alpha": draw(st.floats(0.1, 64))},
                           "seed": draw(st.integers(0, 2**31))}
    if draw(st.booleans()):
        recipe["evaluate"] = {"tasks": draw(st.lists(st.sampled_from(["pubmed_qa", "contract_nli", "vitaminc"]),
                                                     min_size=1, max_size=3)),
                              "limit": draw(st.one_of(st.none(), st.integers(1, 1000)))}
    if draw(st.booleans()):
        recipe["report"] = {}
    return recipe


@SETTINGS
@given(written=recipes())
def test_valid_recipes_round_trip(folder, written):
    path = folder / "generated.yaml"
    path.write_text(yaml.safe_dump(written))
    recipe = load_recipe(path)
    assert recipe.name == written["name"] and recipe.seed == written["seed"]
    assert recipe.output_dir == str((folder / written["output_dir"]).resolve())
    assert recipe.stages() == [s for s in ("generate", "train", "evaluate", "report") if s in written]
    if "generate" in written:
        assert recipe.generate.input.files == [str((folder / f).resolve()) for f in written["generate"]["input"]["files"]]
        assert recipe.generate.sampling.model_dump() == written["generate"]["sampling"]
        assert recipe.generate.task_type == written["generate"]["task_type"]
    if "train" in written:
        assert recipe.train.max_steps == written["train"]["max_steps"]
        assert (recipe.train.lora.r, recipe.train.lora.alpha) == (written["train"]["lora"]["r"],
                                                                  written["train"]["lora"]["alpha"])
    # The copy a run writes into its directory loads back to the same recipe, from any folder.
    copy = folder / "elsewhere" / "recipe.yaml"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    assert load_recipe(copy) == recipe


# ------------------------------------------------------------------------------------------ Bonito output

BONITO_TEXT = fragments(PIPE, "{{context}}", "{{", "}}", "context", "<|pipe", "|>", "<|", " ", "\n", "\t", "\u3000",
                        "Question:", "Yes", "<|tasktype|>", "<|task|>")


def original_bonito_parse(prediction: str, context: str) -> tuple[str, str] | None:
    """BatsResearch/bonito's postprocessing, written out independently (bonito/abstract.py on main, c19dd2b)."""
    prediction = prediction.strip()
    if len(prediction.split("<|pipe|>")) != 2:
        return None
    instruction, answer = prediction.split("<|pipe|>")
    return (instruction.strip().replace("{{context}}", context.strip()),
            answer.strip().replace("{{context}}", context.strip()))


@SETTINGS
@given(text=st.one_of(BONITO_TEXT, st.text()), context=st.one_of(BONITO_TEXT, st.text()))
def test_bonito_output_parsing_follows_the_documented_rules(text, context):
    result = parse_bonito_output(text, context)
    assert result == original_bonito_parse(text, context)
    if text.count(PIPE) != 1:
        assert result is None
        return
    task_input, task_output = result
    before, after = text.split(PIPE)
    assert task_output == after.strip().replace("{{context}}", context.strip())
    assert task_input == before.strip().replace("{{context}}", context.strip())
    if context.strip() and not set("{}") & set(context):
        assert "{{context}}" not in task_input  # every placeholder filled
        assert task_input == task_input.strip()


@SETTINGS
@given(question=st.text().filter(lambda t: PIPE not in t), answer=st.text().filter(lambda t: PIPE not in t),
       context=st.text())
def test_one_pipe_always_parses(question, answer, context):
    result = parse_bonito_output(f"{question}{PIPE}{answer}", context)
    assert result is not None and result[1] == answer.strip().replace("{{context}}", context.strip())
