"""Reliability (docs/reliability.md): bad input, interruptions, atomic writes, safe defaults.

Bad input: every case of the table runs the real CLI (`cli.main`, and a few as a `python -m
bonito_adapt` subprocess to prove there is no traceback) against a copy of a finished run (generate and
train done on a tiny model), and checks the one-line error, exit code 2, and that no file of the run
directory changed (the top-level recipe.yaml aside: it records the latest invocation).

Interruptions: a subprocess (tests/_interrupt_child.py: the CLI with a tiny model made to emit Bonito
pipes, and a delay per shard / step / pair) is stopped with SIGTERM, then with SIGKILL, at a point seen
on disk, rerun, and its outputs compared with an uninterrupted run's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from bonito_adapt import cli
from bonito_adapt._schema import split_settings
from bonito_adapt.generate import stage as generate_stage
from bonito_adapt.rundir import read_manifest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CHILD = TESTS / "_interrupt_child.py"
DOCUMENTS = {
    f"doc{i}.txt": f"The receiving party shall not disclose confidential information of type {i}.\n\n"
                   f"Materials are returned or destroyed within {i + 2} days of a written request."
    for i in range(4)
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ helpers


def tree_hashes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path (`skip`: relative paths left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and str(p.relative_to(root)) not in skip}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err


def run_subprocess(argv: list[str], **env) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "bonito_adapt", *argv], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, timeout=300)
    return result.returncode, result.stderr


def error_line(err: str) -> str:
    """The CLI's one error line: the only line starting with `error: `, the last one printed, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def shaped_engine(pipes: bool = True, delay_s: float = 0.0):
    """generate.stage.load_engine replacement: the real tiny-model engine, completions shaped to parse (see the child)."""
    from _interrupt_child import ShapedEngine

    from bonito_adapt.engines.transformers_engine import TransformersEngine

    return lambda name, spec: ShapedEngine(TransformersEngine(spec), pipes=pipes, delay_s=delay_s)


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCUMENTS.items():
        (folder / name).write_text(text)
    return folder


def generate_section(corpus: Path, model_dir: Path, **overrides) -> dict:
    section = {"input": {"files": [str(corpus)]}, "task_type": "nli", "model": str(model_dir),
               "engine": "transformers", "shard_size": 2, "batch_size": 4, "chunking": {"max_tokens": 24},
               "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 8, "seed": 1}}
    section.update(overrides)
    return section


# ------------------------------------------------------------------------------------------ bad input


@dataclass
class Finished:
    root: Path
    recipe: Path
    run_dir: Path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir) -> Finished:
    """A run with generate and train done (tiny model), whose copies the bad-input cases rerun."""
    from _data import PUBMED_RECORDS

    root = tmp_path_factory.mktemp("reliability")
    corpus = write_corpus(root / "corpus")
    pubmed = root / "pubmed.jsonl"
    pubmed.write_text("".join(json.dumps(r) + "\n" for r in PUBMED_RECORDS))
    recipe = {
        "name": "finished", "output_dir": str(root / "finished"),
        "generate": generate_section(corpus, tiny_model_dir),
        "train": {"model": str(tiny_model_dir), "quantization": "auto", "max_steps": 2, "save_steps": 1,
                  "effective_batch_size": 2, "micro_batch_size": 1, "max_length": 64, "logging_steps": 1},
        "evaluate": {"tasks": ["pubmed_qa"], "models": ["base"], "base_model": str(tiny_model_dir),
                     "data_files": {"pubmed_qa": str(pubmed)}, "limit": 2},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    previous_umask = os.umask(0o022)  # what most systems set; test_files_follow_the_umask checks the modes
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(generate_stage, "load_engine", shaped_engine())
            assert cli.main(["run", str(path), "--stages", "generate,train,evaluate"]) == 0
    finally:
        os.umask(previous_umask)
    return Finished(root, path, root / "finished")


@dataclass
class Case:
    make: object  # (tmp_path, finished) -> (recipe path, overrides)
    expected: tuple[str, ...]  # regexes the error line must match
    stage: str = "generate"
    absent: tuple[str, ...] = ()  # strings that must not appear anywhere in stderr
    needs_no_cuda: bool = False


def _overrides(*items):
    return lambda tmp, run: (run.recipe, list(items))


def _bad_recipe(text):
    def make(tmp, run):
        path = tmp / "bad.yaml"
        path.write_text(text)
        return path, []
    return make


def _input_file(name: str, content: bytes):
    def make(tmp, run):
        (tmp / name).write_bytes(content)
        return run.recipe, [f"generate.input.files=[{tmp / name}]"]
    return make


def _train_data(tmp, run):
    (tmp / "qa.jsonl").write_text(json.dumps({"question": "Is it?", "answer": "yes"}) + "\n")
    return run.recipe, [f"train.datasets=[{{path: {tmp / 'qa.jsonl'}}}]"]


def _afile(tmp, run, below: str = ""):
    (tmp / "afile").write_text("not a folder\n")
    return run.recipe, [f"output_dir={tmp / 'afile'}{below}"]


CASES = {
    # the recipe itself
    "malformed_yaml": Case(_bad_recipe("name: t\noutput_dir: [unclosed\n"),
                           (r"recipe '.*bad\.yaml' is not valid YAML at line \d+, column \d+", r"fix the syntax there")),
    "recipe_not_a_mapping": Case(_bad_recipe("- generate\n- train\n"), (r"must be a YAML mapping with `name`",)),
    "recipe_missing": Case(lambda tmp, run: (tmp / "nope.yaml", []),
                           (r"recipe '.*nope\.yaml' does not exist; pass the path of a \.yaml recipe",)),
    "unknown_key": Case(_overrides("generate.sampling.temprature=0.3"),
                        (r"generate\.sampling\.temprature: unknown key", r"docs/recipe\.md")),
    "wrong_type": Case(_overrides("train.max_steps=many"), (r"train\.max_steps: .*integer.*\(got 'many'\)",),
                       stage="train"),
    "unknown_task_type": Case(_overrides("generate.task_type=nlii"),
                              (r"generate\.task_type: unknown task type 'nlii'", r"python -m bonito_adapt tasks")),
    "override_not_yaml": Case(_overrides("train.max_steps=[1"),
                              (r"override 'train\.max_steps=\[1': the value '\[1' is not valid YAML",), stage="train"),
    "path_with_unknown_user": Case(_overrides("output_dir=~no_such_user_bonito/run"),
                                   (r"a path in output_dir cannot be used", r"plain absolute or relative path")),
    "api_key_in_api_key_env": Case(_overrides("generate.openai.api_key_env=sk-live-0123456789abcdef"),
                                   (r"generate\.openai\.api_key_env: must be the name of an environment variable",
                                    r"not the key itself"), absent=("sk-live-0123456789abcdef",)),
    # generate: input text
    "no_such_input": Case(_overrides("generate.input.files=[no-such-folder]"),
                          (r"generate\.input\.files: nothing matches '.*no-such-folder'", r"check the path")),
    "missing_context_col": Case(_input_file("table.jsonl", b'{"body": "Some text."}\n'),
                                (r"generate\.input\.context_col: column 'text' is not in '.*table\.jsonl'",
                                 r"its columns are body", r"set context_col to one of them")),
    "empty_text_file": Case(_input_file("empty.txt", b""),
                            (r"generate\.input\.files: '.*empty\.txt' is empty", r"remove it or give it some text")),
    "empty_table_file": Case(_input_file("empty.jsonl", b"\n \n"),
                             (r"generate\.input\.files: '.*empty\.jsonl' is empty", r"give it some rows")),
    "binary_text_file": Case(_input_file("binary.txt", b"GIF89a\x00\x01\x02\xff"),
                             (r"generate\.input\.files: '.*binary\.txt' is a binary file", r"remove it from the input")),
    "binary_table_file": Case(_input_file("binary.jsonl", b"\x00\x01\x02\x03"),
                              (r"'.*binary\.jsonl' is a binary file, not \.jsonl text", r"fix the file or its extension")),
    "corrupt_parquet": Case(_input_file("corrupt.parquet", b"this is not parquet\n"),
                            (r"cannot parse '.*corrupt\.parquet' as \.parquet", r"fix the file")),
    "not_utf8_text_file": Case(_input_file("latin1.txt", "Café résumé".encode("latin-1")),
                               (r"'.*latin1\.txt' is not UTF-8 text; convert it to UTF-8",)),
    # models
    "generate_model_missing": Case(_overrides("generate.model=./no-such-model"),
                                   (r"generate\.model: model path '.*no-such-model' does not exist",
                                    r"give a local model folder or a Hugging Face id")),
    "generate_4bit_without_cuda": Case(_overrides("generate.load_in_4bit=true"),
                                       (r"generate\.load_in_4bit needs a CUDA GPU", r"set load_in_4bit: false"),
                                       needs_no_cuda=True),
    "train_model_missing": Case(_overrides("train.model=./no-such-model"),
                                (r"train\.model: model path '.*no-such-model' does not exist",), stage="train"),
    "train_4bit_without_cuda": Case(_overrides("train.quantization=4bit"),
                                    (r"train\.quantization: 4bit .*needs a CUDA GPU", r"set train\.quantization: auto"),
                                    stage="train", needs_no_cuda=True),
    # train data
    "dataset_without_input_output": Case(_train_data, (r"train\.datasets\[0\] \(.*qa\.jsonl\): no column 'input', "
                                                       r"'output'", r"columns question, answer",
                                                       r"set input_col/output_col"), stage="train"),
    # evaluate
    "unknown_eval_task": Case(_overrides("evaluate.tasks=[pubmed_qa, no_such_task_xyz]"),
                              (r"evaluate\.tasks: unknown task 'no_such_task_xyz'", r"lm_eval ls tasks|did you mean"),
                              stage="evaluate"),
    "eval_model_missing": Case(_overrides("evaluate.base_model=./no-such-model"),
                               (r"evaluate\.base_model: model path '.*no-such-model' does not exist",),
                               stage="evaluate"),
    # the run directory
    "output_dir_is_a_file": Case(_afile, (r"output_dir '.*afile' is a file; set output_dir to a folder path",)),
    "output_dir_below_a_file": Case(lambda tmp, run: _afile(tmp, run, "/run"),
                                    (r"output_dir '.*afile/run' is not writable \(Not a directory\)",
                                     r"choose a folder you can write to")),
}
SUBPROCESS_CASES = ("malformed_yaml", "binary_text_file", "train_4bit_without_cuda", "output_dir_below_a_file")


@pytest.mark.parametrize("via, name", [("main", name) for name in CASES] + [("subprocess", name) for name in SUBPROCESS_CASES],
                         ids=lambda value: value)
def test_bad_input(via, name, finished, tmp_path, capsys):
    case = CASES[name]
    if case.needs_no_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    run_dir = tmp_path / "run"
    shutil.copytree(finished.run_dir, run_dir)
    recipe, overrides = case.make(tmp_path, finished)
    argv = ["run", str(recipe), "--stages", case.stage, f"output_dir={run_dir}", *overrides]
    before = tree_hashes(tmp_path, skip=("run/recipe.yaml",))

    code, err = run_subprocess(argv) if via == "subprocess" else run_cli(argv, capsys)

    assert code == 2, err
    line = error_line(err)
    for pattern in case.expected:
        assert re.search(pattern, line), (pattern, line)
    for secret in case.absent:
        assert secret not in err
    # Nothing was written: the finished stages, the inputs and the recipe are byte for byte as before.
    assert tree_hashes(tmp_path, skip=("run/recipe.yaml",)) == before


def test_no_parsed_generation_stops_before_training(finished, tmp_path, capsys, monkeypatch):
    """A corpus where nothing parses: the generate stage stops with the parse rate and a hint; train never starts."""
    monkeypatch.setattr(generate_stage, "load_engine", shaped_engine(pipes=False))
    run_dir = tmp_path / "fresh"
    code, err = run_cli(["run", str(finished.recipe), "--stages", "generate,train", f"output_dir={run_dir}"], capsys)
    assert code == 2
    line = error_line(err)
    assert re.search(r"generate: no generation parsed into a task \(parse rate 0% of \d+\)", line)
    assert "style: prompted" in line and "sampling.max_tokens" in line and str(run_dir / "generate" / "shards") in line
    assert read_manifest(run_dir / "generate") is None and not (run_dir / "generate" / "tasks.jsonl").exists()
    assert json.loads((run_dir / "generate" / "stats.json").read_text())["parse_rate"] == 0.0
    assert not (run_dir / "train").exists()  # no empty training run


def test_output_dir_not_writable(finished, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
    else:  # root ignores permission bits: make writes below `locked` fail the way they do for a user
        real_write_text = Path.write_text

        def write_text(self, *args, **kwargs):
            if locked in self.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_write_text(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    try:
        code, err = run_cli(["run", str(finished.recipe), f"output_dir={locked / 'run'}"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert re.search(r"output_dir '.*locked/run' is not writable \(Permission denied\); choose a folder you can "
                     r"write to", error_line(err))


def _fail_fsync_of(marker: str):
    """os.fsync that fails with ENOSPC for the file whose name contains `marker` (as a full disk would)."""
    real_fsync = os.fsync

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    return fsync


def test_disk_full_while_writing_a_shard_keeps_the_written_shards(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generate_stage, "load_engine", shaped_engine())
    run_dir = tmp_path / "run"
    argv = ["run", str(finished.recipe), "--stages", "generate", f"output_dir={run_dir}"]
    shards = run_dir / "generate" / "shards"
    with monkeypatch.context() as disk:
        disk.setattr(os, "fsync", _fail_fsync_of(".shard-00000004-00000006.jsonl."))  # the third shard
        code, err = run_cli(argv, capsys)
    assert code == 2
    assert re.search(r"cannot write '.*shard-00000004-00000006\.jsonl' \(No space left on device\); free some disk space, then "
                     r"rerun the same command to resume", error_line(err))
    first_two = ["shard-00000000-00000002.jsonl", "shard-00000002-00000004.jsonl"]
    assert sorted(p.name for p in shards.iterdir()) == ["fingerprint.json", *first_two]
    written = tree_hashes(shards)
    for name in first_two:  # whole, valid JSON lines
        assert len([json.loads(line) for line in (shards / name).read_text().splitlines()]) == 2 * 2
    assert read_manifest(run_dir / "generate") is None

    # Space freed: the rerun resumes after the two shards on disk and leaves them as they were.
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    stats = json.loads((run_dir / "generate" / "stats.json").read_text())
    assert stats["shards_resumed"] == 2 and stats["shards"] == -(-stats["passages"] // 2) > 2
    after = tree_hashes(shards)
    assert {name: after[name] for name in written} == written


def test_disk_full_inside_a_library_is_one_line(finished, tmp_path, capsys, monkeypatch):
    """ENOSPC from a write we do not own (datasets' save_to_disk, checkpoints) still ends in one line."""
    import datasets

    def save_to_disk(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path}/data-00000-of-00001.arrow")

    monkeypatch.setattr(generate_stage, "load_engine", shaped_engine())
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_to_disk)
    run_dir = tmp_path / "run"
    code, err = run_cli(["run", str(finished.recipe), "--stages", "generate", f"output_dir={run_dir}"], capsys)
    assert code == 2
    assert re.search(r"^error: No space left on device writing '.*data-00000-of-00001\.arrow'; free some disk space",
                     error_line(err))
    assert read_manifest(run_dir / "generate") is None and not (run_dir / "generate" / "dataset").exists()


# ------------------------------------------------------------------------------------------ atomic writes


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from bonito_adapt.errors import UserError
    from bonito_adapt.rundir import atomic_write_json, atomic_write_text

    target = tmp_path / "stats.json"
    atomic_write_json(target, {"version": 1})
    monkeypatch.setattr(os, "fsync", _fail_fsync_of(".stats.json."))
    with pytest.raises(UserError, match=r"No space left on device"):
        atomic_write_text(target, "half")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_a_restarted_stage_removes_temp_files_of_killed_writes(tmp_path):
    from bonito_adapt.rundir import StageRun

    stage = StageRun(tmp_path, "generate", config={"a": 1}, inputs={})
    shards = stage.dir / "shards"
    shards.mkdir(parents=True)
    (shards / "shard-00000.jsonl").write_text("{}\n")
    (shards / ".shard-00001.jsonl.abc123.tmp").write_text("{\"half")  # what SIGKILL leaves mid-write
    (stage.dir / ".loss.abc.tmp.png").write_bytes(b"\x89PNG")
    stage.start()
    assert sorted(p.name for p in stage.dir.rglob("*") if p.is_file()) == ["shard-00000.jsonl"]


def test_files_follow_the_umask(finished, tmp_path):
    """Every file a run writes (shards, tasks, dataset, adapter, checkpoints, results, manifests) is readable
    by the group and others under umask 022, as files made with open() are; folders 0755."""
    files = [p for p in finished.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.name == "adapter_model.safetensors" for p in files)
    assert any(p.name.startswith("shard-") for p in files) and any(p.name == "results.json" for p in files)
    wrong = {str(p.relative_to(finished.run_dir)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o644}
    assert wrong == {}
    folders = {str(p.relative_to(finished.run_dir)): oct(p.stat().st_mode & 0o777)
               for p in finished.run_dir.rglob("*") if p.is_dir() and p.stat().st_mode & 0o777 != 0o755}
    assert folders == {}
    from bonito_adapt.rundir import atomic_write_text

    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o640


def test_manifests_record_versions_seeds_and_config(finished):
    from bonito_adapt import __version__
    from bonito_adapt.config import load_recipe

    recipe = load_recipe(finished.recipe)
    for stage in ("generate", "train"):
        manifest = read_manifest(finished.run_dir / stage)
        results, execution = split_settings(getattr(recipe, stage))
        assert manifest["stage"] == stage and manifest["config"] == results and manifest["execution"] == execution
        versions = manifest["versions"]
        assert versions["bonito_adapt"] == __version__
        assert {"python", "torch", "transformers", "datasets"} <= set(versions)
        assert manifest["fingerprint"] and manifest["inputs"] and manifest["timings"]["seconds"] >= 0
    assert read_manifest(finished.run_dir / "generate")["config"]["sampling"]["seed"] == 1
    assert read_manifest(finished.run_dir / "train")["config"]["seed"] == 42
    assert {"peft", "trl", "accelerate"} <= set(read_manifest(finished.run_dir / "train")["versions"])
    copy = yaml.safe_load((finished.run_dir / "recipe.yaml").read_text())
    assert copy == recipe.model_dump(mode="json")


# ------------------------------------------------------------------------------------------ interruptions


def start_child(argv: list[str], log: Path, **env) -> subprocess.Popen:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), **env}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, str(CHILD), *argv], stdout=handle, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=environment)


def wait_until(condition, process: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before the kill point: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"kill point not reached in {timeout_s} s: {log.read_text()[-3000:]}")
        time.sleep(0.02)


def stop(process: subprocess.Popen, sig: int, log: Path) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 120 s after signal {sig}: {log.read_text()[-3000:]}")


def check_sigterm_exit(code: int, log: Path) -> None:
    output = log.read_text()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "interrupted (SIGTERM); rerun the same command to resume" in output
    assert "Traceback" not in output


def finish(argv: list[str], log: Path, **env) -> str:
    process = start_child(argv, log, **env)
    code = process.wait(timeout=600)
    assert code == 0, log.read_text()[-3000:]
    return log.read_text()


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp*") if p.is_file()]


def _rows(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted((stage_dir / "shards").glob("shard-*.jsonl"))
            for line in shard.read_text().splitlines()]


def test_generate_killed_by_sigterm_then_sigkill_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir,
                                                                                       monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    section = generate_section(corpus, tiny_model_dir, shard_size=1)  # 9 passages -> 9 shards
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "killed"), "generate": section}))

    monkeypatch.setattr(generate_stage, "load_engine", shaped_engine())
    assert cli.main(["run", str(recipe), f"output_dir={tmp_path / 'reference'}"]) == 0
    reference = tmp_path / "reference" / "generate"

    stage_dir = tmp_path / "killed" / "generate"
    shards = stage_dir / "shards"
    argv = ["run", str(recipe)]
    count = lambda: len(list(shards.glob("shard-*.jsonl")))  # noqa: E731

    process = start_child(argv, tmp_path / "sigterm.log", BONITO_TEST_DELAY_S="0.5")
    wait_until(lambda: count() >= 1, process, tmp_path / "sigterm.log")
    check_sigterm_exit(stop(process, signal.SIGTERM, tmp_path / "sigterm.log"), tmp_path / "sigterm.log")
    after_sigterm = count()
    assert 1 <= after_sigterm < 9 and read_manifest(stage_dir) is None and not temp_files(stage_dir)

    process = start_child(argv, tmp_path / "sigkill.log", BONITO_TEST_DELAY_S="0.5")
    wait_until(lambda: count() >= after_sigterm + 1, process, tmp_path / "sigkill.log")
    assert stop(process, signal.SIGKILL, tmp_path / "sigkill.log") == -signal.SIGKILL
    after_sigkill = count()
    assert after_sigterm < after_sigkill < 9 and read_manifest(stage_dir) is None

    finish(argv, tmp_path / "resume.log")
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["shards"] == stats["passages"] == 9 and stats["shards_resumed"] == after_sigkill
    assert read_manifest(stage_dir)["counts"] == read_manifest(reference)["counts"]
    assert _rows(stage_dir) == _rows(reference)  # none lost, none doubled, the same samples
    assert (stage_dir / "tasks.jsonl").read_text() == (reference / "tasks.jsonl").read_text()
    assert not temp_files(stage_dir)


@pytest.mark.slow
def test_train_killed_by_sigterm_then_sigkill_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    from _data import make_tasks, write_jsonl
    from safetensors.torch import load_file

    from bonito_adapt import train
    from bonito_adapt.config import load_recipe
    from bonito_adapt.train.trainer import last_checkpoint

    data = write_jsonl(tmp_path / "tasks.jsonl", make_tasks(24))
    fields = {"model": str(tiny_model_dir), "quantization": "auto", "datasets": [{"path": str(data)}],
              "max_steps": 6, "save_steps": 2, "save_total_limit": 5, "effective_batch_size": 2,
              "micro_batch_size": 1, "max_length": 64, "logging_steps": 1, "learning_rate": 1e-2}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "killed"), "train": fields}))
    reference = load_recipe(recipe, [f"output_dir={tmp_path / 'reference'}"])
    train.run(reference, reference.run_dir)

    stage_dir = tmp_path / "killed" / "train"
    checkpoint = lambda step: (stage_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()  # noqa: E731
    argv = ["run", str(recipe)]

    process = start_child(argv, tmp_path / "sigterm.log", BONITO_TEST_DELAY_S="0.4")
    wait_until(lambda: checkpoint(2), process, tmp_path / "sigterm.log")
    check_sigterm_exit(stop(process, signal.SIGTERM, tmp_path / "sigterm.log"), tmp_path / "sigterm.log")
    assert read_manifest(stage_dir) is None and not checkpoint(6)
    resumed_first = last_checkpoint(stage_dir / "checkpoints")

    process = start_child(argv, tmp_path / "sigkill.log", BONITO_TEST_DELAY_S="0.4")
    wait_until(lambda: last_checkpoint(stage_dir / "checkpoints") != resumed_first, process,
               tmp_path / "sigkill.log")
    assert stop(process, signal.SIGKILL, tmp_path / "sigkill.log") == -signal.SIGKILL
    assert read_manifest(stage_dir) is None
    last = int(last_checkpoint(stage_dir / "checkpoints").name.split("-")[1])
    assert 2 < last < 6

    finish(argv, tmp_path / "resume.log")
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["resumed_from_step"] == last and stats["steps"] == 6
    assert last_checkpoint(stage_dir / "checkpoints").name == "checkpoint-6"
    history = json.loads((stage_dir / "log_history.json").read_text())
    reference_history = json.loads((reference.run_dir / "train" / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert [e["loss"] for e in history if "loss" in e] == pytest.approx(
        [e["loss"] for e in reference_history if "loss" in e], rel=1e-4)
    resumed = load_file(stage_dir / "adapter" / "adapter_model.safetensors")
    uninterrupted = load_file(reference.run_dir / "train" / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, weight in uninterrupted.items():
        assert resumed[name].allclose(weight, atol=1e-6), name


@pytest.mark.slow
def test_evaluate_killed_by_sigterm_then_sigkill_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    from _data import PUBMED_RECORDS, make_lora_adapter

    from bonito_adapt import evaluate
    from bonito_adapt.config import load_recipe

    pubmed = tmp_path / "pubmed.jsonl"
    pubmed.write_text("".join(json.dumps(r) + "\n" for r in PUBMED_RECORDS))
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", identity=False)
    section = {"tasks": ["pubmed_qa"], "models": ["base", "adapted"], "base_model": str(tiny_model_dir),
               "adapter": str(adapter), "data_files": {"pubmed_qa": str(pubmed)}, "limit": 2}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "killed"), "evaluate": section}))
    reference = load_recipe(recipe, [f"output_dir={tmp_path / 'reference'}"])
    evaluate.run(reference, reference.run_dir)

    out = tmp_path / "killed" / "evaluate"
    marks = tmp_path / "marks"
    marks.mkdir()
    argv = ["run", str(recipe)]
    env = {"BONITO_TEST_DELAY_S": "1.0", "BONITO_TEST_MARKS": str(marks)}

    # SIGTERM while the first (model, task) pair is being evaluated: nothing is marked done.
    process = start_child(argv, tmp_path / "sigterm.log", **env)
    wait_until(lambda: (marks / "evaluate-base-pubmed_qa").exists(), process, tmp_path / "sigterm.log")
    check_sigterm_exit(stop(process, signal.SIGTERM, tmp_path / "sigterm.log"), tmp_path / "sigterm.log")
    assert not (out / "done").exists() and not (out / "results.json").exists()

    # SIGKILL while the second pair runs: the first stays done.
    process = start_child(argv, tmp_path / "sigkill.log", **env)
    wait_until(lambda: (marks / "evaluate-adapted-pubmed_qa").exists(), process, tmp_path / "sigkill.log")
    assert stop(process, signal.SIGKILL, tmp_path / "sigkill.log") == -signal.SIGKILL
    assert (out / "done" / "base" / "pubmed_qa.json").is_file() and not (out / "done" / "adapted").exists()
    assert read_manifest(out) is None

    for mark in marks.iterdir():
        mark.unlink()
    finish(argv, tmp_path / "resume.log", BONITO_TEST_MARKS=str(marks))
    evaluated = sorted(p.name for p in marks.iterdir() if p.name.startswith("evaluate-"))
    assert evaluated == ["evaluate-adapted-pubmed_qa"]  # base was not redone
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((reference.run_dir / "evaluate" / "results.json").read_text())
    assert results["models"].keys() == expected["models"].keys() == {"base", "adapted"}
    for model, tasks in expected["models"].items():
        for metric, value in tasks["pubmed_qa"]["average"].items():
            assert results["models"][model]["pubmed_qa"]["average"][metric] == pytest.approx(value)
        assert results["models"][model]["pubmed_qa"]["templates"].keys() == tasks["pubmed_qa"]["templates"].keys()
    assert not temp_files(out)


def test_sigterm_in_process_returns_143_with_a_message(capsys, monkeypatch):
    """The handler cli.main installs: SIGTERM unwinds like Ctrl-C, and the previous handler comes back."""
    def dispatch(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    before = signal.getsignal(signal.SIGTERM)
    code, err = run_cli(["tasks"], capsys)
    assert code == 143 and err.strip() == ("interrupted (SIGTERM); rerun the same command to resume (finished shards, "
                                           "checkpoints and evaluations are kept)")
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------------------------------ safe defaults


def test_trust_remote_code_is_off_unless_the_recipe_sets_it(tiny_model_dir, monkeypatch):
    import transformers

    from bonito_adapt.engines.transformers_engine import TransformersEngine
    from bonito_adapt.evaluate.config import EvaluateConfig
    from bonito_adapt.evaluate.models import build_lm
    from bonito_adapt.generate.config import GenerateConfig
    from bonito_adapt.train.config import TrainConfig
    from bonito_adapt.train.trainer import _load_model, resolve_setup

    seen: list[bool] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = auto.from_pretrained.__func__

        def spy(cls, *args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(cls, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(spy))

    assert not any(section.model_fields["trust_remote_code"].default
                   for section in (GenerateConfig, TrainConfig, EvaluateConfig))
    generate_config = GenerateConfig(input={"files": ["x"]}, task_type="qa", model=str(tiny_model_dir))
    setup = resolve_setup(TrainConfig(quantization="none"), cuda=False, world_size=1)
    spec = {"name": "base", "model": str(tiny_model_dir), "gguf_file": None, "adapter": None, "prompt_format": "plain"}
    loaders = {
        "generate": lambda: TransformersEngine(generate_config.engine_spec()),
        "train": lambda: _load_model(TrainConfig(model=str(tiny_model_dir), quantization="none"), setup),
        "evaluate": lambda: build_lm(spec, EvaluateConfig(tasks=["pubmed_qa"], batch_size=1), "cpu", "float32"),
    }
    for stage, load in loaders.items():
        seen.clear()
        load()
        assert seen and seen.count(False) == len(seen), (stage, seen)  # the model (and tokenizer) loads

    seen.clear()
    TransformersEngine(generate_config.model_copy(update={"trust_remote_code": True}).engine_spec())
    assert seen and all(seen)


class FakeOpenAIServer:
    """`/v1/models` and `/v1/completions` answering parseable Bonito output; records the auth headers."""

    def __init__(self):
        self.authorizations: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.authorizations.append(self.headers.get("authorization"))
                self._send({"data": [{"id": "served", "max_model_len": 1024}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.authorizations.append(self.headers.get("authorization"))
                digest = hashlib.sha256(body["prompt"].encode()).hexdigest()[:8]
                self._send({"choices": [{"index": 0, "text": f"Is {digest} implied? {{{{context}}}} <|pipe|> yes"}]})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def test_keys_and_url_credentials_never_reach_the_run_dir_or_logs(tmp_path, tiny_model_dir, capsys, caplog,
                                                                   monkeypatch):
    secret, password = "sk-reliability-0123456789abcdef", "urlpassw0rd"
    # Two replicas of one server: one reached with user:password in its URL (sent as basic auth), one
    # with the API key from the environment (sent as a bearer token).
    monkeypatch.setenv("BONITO_RELIABILITY_KEY", secret)
    server = FakeOpenAIServer()
    corpus = write_corpus(tmp_path / "corpus")
    section = generate_section(corpus, tiny_model_dir, engine="openai", openai={
        "base_urls": [f"http://alice:{password}@127.0.0.1:{server.port}/v1", f"http://127.0.0.1:{server.port}/v1"],
        "api_key_env": "BONITO_RELIABILITY_KEY", "model_name": "served", "backoff_s": 0.01})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "run"), "generate": section}))
    try:
        with caplog.at_level(logging.DEBUG):
            code, err = run_cli(["run", str(recipe)], capsys)
    finally:
        server.close()
    assert code == 0, err
    assert {f"Bearer {secret}", "Basic YWxpY2U6dXJscGFzc3cwcmQ="} <= set(server.authorizations)  # both in use
    assert json.loads((tmp_path / "run" / "generate" / "stats.json").read_text())["tasks"] > 0

    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {"recipe.yaml", "manifest.json", "tasks.jsonl"} <= {p.name for p in files}
    for path in files:
        content = path.read_bytes()
        assert secret.encode() not in content and password.encode() not in content, path
    for text in (err, capsys.readouterr().out, caplog.text):
        assert secret not in text and password not in text
    manifest = read_manifest(tmp_path / "run" / "generate")
    # where requests go is an execution setting: recorded (redacted) beside the config, not in its hash
    assert manifest["execution"]["openai"]["base_urls"] == [f"http://***@127.0.0.1:{server.port}/v1",
                                                            f"http://127.0.0.1:{server.port}/v1"]
    assert manifest["execution"]["openai"]["api_key_env"] == "BONITO_RELIABILITY_KEY"  # the name, never the value
    assert manifest["config"]["openai"] == {"model_name": "served"}


def test_changing_only_url_credentials_keeps_the_stage_current(tmp_path, tiny_model_dir):
    """Credentials are not part of the config hash either (they are redacted before hashing)."""
    from bonito_adapt.generate.config import GenerateConfig
    from bonito_adapt.rundir import config_hash

    def config(url):
        return GenerateConfig(input={"files": ["x"]}, task_type="qa", engine="openai", openai={"base_urls": [url]})

    assert config_hash(config("http://a:one@host:8000/v1")) == config_hash(config("http://a:two@host:8000/v1"))
    assert config("http://a:one@host:8000/v1").openai.base_urls == ["http://a:one@host:8000/v1"]  # the engine's copy
