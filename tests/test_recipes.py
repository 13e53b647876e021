"""Every shipped recipe validates, opens with its launch command, and the paper recipes match the paper's setup."""

from pathlib import Path

import pytest

from bonito_adapt.benchmarks import BENCHMARKS
from bonito_adapt.cli import main
from bonito_adapt.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
# The paper's task types, written out here to check the registry against them.
PAPER = {
    "pubmed_qa": "ynqa", "privacy_qa": "ynqa", "contract_nli": "nli", "vitaminc": "nli",
    "squadshifts_nyt": "exqa", "squadshifts_amazon": "exqa", "squadshifts_reddit": "exqa",
}


def test_the_registry_holds_the_papers_benchmarks_in_its_table_order():
    assert {name: b.task_type for name, b in BENCHMARKS.items()} == PAPER
    assert list(BENCHMARKS) == ["pubmed_qa", "privacy_qa", "squadshifts_nyt", "squadshifts_amazon",
                                "squadshifts_reddit", "contract_nli", "vitaminc"]
    assert {b.scoring for b in BENCHMARKS.values() if b.name.startswith("squadshifts")} == {"generate"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_header_gives_launch_command(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"recipes/{path.name}" in line and "bonito_adapt" in line for line in header)


@pytest.mark.parametrize("name, task_type", PAPER.items())
def test_paper_recipes_follow_the_paper(name, task_type):
    recipe = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / f"{name}.yaml")
    assert recipe.generate.input.dataset == "BatsResearch/bonito-experiment"
    assert recipe.generate.input.dataset_config == f"unannotated_{name}" == BENCHMARKS[name].unannotated_config
    assert recipe.generate.task_type == task_type
    assert recipe.generate.model == "BatsResearch/Llama-3.1-8B-bonito-v1"
    assert recipe.train.model == "mistralai/Mistral-7B-v0.1" and recipe.train.quantization == "4bit"
    assert recipe.evaluate.tasks == [name] and recipe.evaluate.models == ["base", "adapted"]
