"""The CLI: subcommands, exit codes, one-line errors."""

from bonito_adapt.cli import main


def test_tasks_lists_all_types(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "nli" in out and "natural language inference" in out and len(out.strip().splitlines()) == 16


def test_validate_ok(write_recipe, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("A passage.")
    path = write_recipe({"name": "t", "output_dir": "out", "generate": {"input": {"files": ["x.txt"]}, "task_type": "qa"}})
    assert main(["validate", str(path)]) == 0
    assert "is valid" in capsys.readouterr().err


def test_validate_bad_exits_2_with_one_line(write_recipe, capsys):
    path = write_recipe({"name": "t", "output_dir": "out", "bogus": 1})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bogus: unknown key" in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_output_dir_that_is_a_file(write_recipe, tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    path = write_recipe({"name": "t", "output_dir": "out", "report": {}})
    assert main(["run", str(path)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_unknown_stage_selection(write_recipe, capsys):
    path = write_recipe({"name": "t", "output_dir": "out", "report": {}})
    assert main(["run", str(path), "--stages", "train"]) == 2
    assert "no `train` section" in capsys.readouterr().err


def test_validate_reports_every_static_problem_and_run_stops_before_any_stage(write_recipe, tmp_path, capsys,
                                                                              tiny_model_dir):
    """One line per problem, all at once, exit 2; `run` makes the same checks before its first stage, so
    nothing is written (not even the run directory)."""
    (tmp_path / "questions.jsonl").write_text("{}\n")
    recipe = {
        "name": "t", "output_dir": "out",
        "train": {"model": str(tiny_model_dir), "micro_batch_size": 3, "datasets": [{"path": "generate"},
                                                                                   {"path": "./missing.jsonl"}]},
        "evaluate": {"tasks": ["pubmed_qaa", "contract_nli"], "base_model": "not a model id!",
                     "data_files": {"vitaminc": "questions.jsonl", "contract_nli": "questions.txt"},
                     "prompt_format": {"adapted": "chat"}, "models": ["base"]},
    }
    path = write_recipe(recipe)
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in "\n".join(lines)
    expected = [
        r"train.effective_batch_size 16 is not divisible by micro_batch_size 3 .* one of 1, 2, 4, 8, 16",
        r"train.datasets\[0\].path: generate .* the recipe has no generate section",
        r"train.datasets\[1\].path: '.*/missing.jsonl' does not exist",
        r"evaluate.tasks: unknown task 'pubmed_qaa'.*did you mean pubmed_qa",
        r"evaluate.data_files.contract_nli: .*questions.txt' is not a",
        r"evaluate.data_files: 'vitaminc' is not in evaluate.tasks",
        r"evaluate.base_model: 'not a model id!' is neither a local folder nor a Hugging Face id",
        r"evaluate.prompt_format.adapted: adapted is not in evaluate.models",
    ]
    import re

    assert len(lines) == len(expected), lines
    for pattern, line in zip(expected, lines, strict=True):
        assert re.search(pattern, line), (pattern, line)

    assert main(["run", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == len(expected)
    assert not (tmp_path / "out").exists()


def test_run_checks_only_the_selected_stages_against_what_earlier_runs_left(write_recipe, tmp_path, capsys,
                                                                            tiny_model_dir):
    recipe = {"name": "t", "output_dir": "out", "train": {"model": str(tiny_model_dir)},
              "evaluate": {"tasks": ["pubmed_qa"]}}
    path = write_recipe(recipe)
    assert main(["run", str(path), "--stages", "evaluate"]) == 2
    assert "evaluate.models includes 'adapted', but the train stage is not among --stages and has not run" in \
        capsys.readouterr().err
    (tmp_path / "out" / "train" / "adapter").mkdir(parents=True)
    from bonito_adapt.checks import recipe_problems
    from bonito_adapt.config import load_recipe

    assert recipe_problems(load_recipe(path), ["evaluate"]) == []
