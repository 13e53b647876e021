"""The CLI: subcommands, exit codes, one-line errors."""

from bonito_adapt.cli import main


def test_tasks_lists_all_types(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "nli" in out and "natural language inference" in out and len(out.strip().splitlines()) == 16


def test_validate_ok(write_recipe, capsys):
    path = write_recipe({"name": "t", "output_dir": "out", "generate": {"input": {"files": ["x"]}, "task_type": "qa"}})
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
