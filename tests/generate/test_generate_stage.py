"""The generate stage end to end on a tiny random model: shards, resume, skip, outputs, styles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonito_adapt import generate
from bonito_adapt.cli import main
from bonito_adapt.config import load_recipe
from bonito_adapt.engines.transformers_engine import TransformersEngine
from bonito_adapt.errors import UserError
from bonito_adapt.generate import stage as generate_stage
from bonito_adapt.generate.prompted import INSTRUCTIONS
from bonito_adapt.generate.stage import passage_token_limit
from bonito_adapt.generate.task_format import PIPE, TaskFormat

DOCUMENTS = {
    "nda.md": "The receiving party shall not disclose confidential information.\n\n"
              "Materials are returned or destroyed within thirty days of a written request.",
    "policy.txt": "Employees may work remotely after probation.\n\nThe company VPN is required on public networks.",
    "billing.md": "Monthly plans are billed on the day of subscription.\n\nAnnual plans are refunded within 14 days.",
    "security.txt": "Report every incident at once.\n\nThe on-call engineer answers within fifteen minutes.",
}


class PipeEngine:
    """The real tiny-model engine, with its completions made parseable half of the time.

    A random model never writes `<|pipe|>`; this double turns each even-length completion into
    `text <|pipe|> length` and strips pipes from the others, so the stage sees both parsed and
    failed generations while the sampling itself stays the real, seeded one.
    """

    name = "transformers"

    def __init__(self, inner: TransformersEngine, fail_on_call: int | None = None, pipes: bool = True):
        self.inner = inner
        self.fail_on_call = fail_on_call
        self.pipes = pipes
        self.calls = 0
        self.prompts: list[str] = []
        self.tokenizer = inner.tokenizer

    @property
    def max_context(self):
        return self.inner.max_context

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def generate(self, prompts, sampling):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("simulated kill")
        self.prompts.extend(prompts)
        completions = self.inner.generate(prompts, sampling)
        return [[self._shape(text) for text in samples] for samples in completions]

    def _shape(self, text: str) -> str:
        text = text.replace(PIPE, "")
        return f"{text} {PIPE} {len(text)}" if self.pipes and len(text) % 2 == 0 else text

    def close(self):
        pass


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in DOCUMENTS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def recipe_file(tmp_path, corpus, tiny_model_dir):
    def write(name: str = "recipe.yaml", **generate_overrides) -> Path:
        import yaml

        section = {
            "input": {"files": [str(corpus)]},
            "task_type": "nli",
            "model": str(tiny_model_dir),
            "engine": "transformers",
            "shard_size": 2,
            "batch_size": 3,
            "chunking": {"max_tokens": 24},
            "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 8, "seed": 1},
        }
        section.update(generate_overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"name": "t", "output_dir": f"out-{path.stem}", "generate": section}))
        return path

    return write


def _use_engine(monkeypatch, **engine_options) -> list[PipeEngine]:
    """Route the stage's engine through PipeEngine; return the list of engines it created."""
    created: list[PipeEngine] = []

    def load(name, spec):
        created.append(PipeEngine(TransformersEngine(spec), **engine_options))
        return created[-1]

    monkeypatch.setattr(generate_stage, "load_engine", load)
    return created


def _shard_rows(stage_dir: Path) -> list[dict]:
    rows = []
    for shard in sorted((stage_dir / "shards").glob("shard-*.jsonl")):
        rows += [json.loads(line) for line in shard.read_text().splitlines()]
    return rows


def test_stage_outputs(recipe_file, monkeypatch, capsys):
    engines = _use_engine(monkeypatch)
    recipe = load_recipe(recipe_file())
    stage_dir = generate.run(recipe, recipe.run_dir)
    stats = json.loads((stage_dir / "stats.json").read_text())
    rows = _shard_rows(stage_dir)
    tasks = [json.loads(line) for line in (stage_dir / "tasks.jsonl").read_text().splitlines()]

    assert stats["documents"] == 4 and stats["passages"] >= 5  # each document is split in two
    assert stats["shards"] == -(-stats["passages"] // 2) and len(list((stage_dir / "shards").glob("*.jsonl"))) == \
        stats["shards"]
    assert stats["generations"] == len(rows) == 2 * stats["passages"]  # n = 2, failed parses included
    assert sorted({r["passage_index"] for r in rows}) == list(range(stats["passages"]))
    assert stats["parsed"] == sum(r["parsed"] for r in rows) and 0 < stats["parsed"] < len(rows)
    assert stats["parse_rate"] == round(stats["parsed"] / stats["generations"], 4)
    assert stats["tasks"] == len(tasks) == stats["parsed"] - stats["duplicate_tasks_dropped"]
    assert stats["generated_tokens"] > 0 and stats["prompt_tokens"] > 0 and stats["tokens_per_s"] > 0
    for task in tasks:
        assert set(task) == {"input", "output", "task_type", "context", "source_id"}
        assert task["task_type"] == "nli" and task["source_id"] in DOCUMENTS
        assert task["context"] in DOCUMENTS[task["source_id"]]
        assert task["output"].isdigit()
    # Bonito style: the prompt is Bonito's, with the full task-type name.
    assert all(p.startswith("<|tasktype|>\nnatural language inference\n<|context|>\n") for p in engines[0].prompts)

    import datasets

    dataset = datasets.load_from_disk(str(stage_dir / "dataset"))
    assert dataset.to_list() == tasks
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["counts"]["tasks"] == len(tasks) and "corpus_files" in manifest["inputs"]
    out = capsys.readouterr().out
    assert "parse rate" in out and "tokens per s" in out


def test_resume_after_kill_equals_uninterrupted_run(recipe_file, monkeypatch):
    _use_engine(monkeypatch)
    reference = load_recipe(recipe_file("reference.yaml"))
    reference_dir = generate.run(reference, reference.run_dir)

    recipe = load_recipe(recipe_file("killed.yaml"))
    _use_engine(monkeypatch, fail_on_call=3)  # dies while generating the third shard
    with pytest.raises(RuntimeError, match="simulated kill"):
        generate.run(recipe, recipe.run_dir)
    stage_dir = recipe.run_dir / "generate"
    # each shard's file names its passages: [0, 2) and [2, 4)
    assert sorted(p.name for p in (stage_dir / "shards").glob("*.jsonl")) == ["shard-00000000-00000002.jsonl",
                                                                                "shard-00000002-00000004.jsonl"]
    assert not (stage_dir / "manifest.json").exists()

    engines = _use_engine(monkeypatch)
    generate.run(recipe, recipe.run_dir)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["shards_resumed"] == 2
    assert engines[0].calls == stats["shards"] - 2  # only the missing shards were generated
    assert _shard_rows(stage_dir) == _shard_rows(reference_dir)  # none lost, none doubled, same samples
    assert (stage_dir / "tasks.jsonl").read_text() == (reference_dir / "tasks.jsonl").read_text()


def test_execution_settings_keep_finished_generations(recipe_file, monkeypatch):
    """batch_size, shard_size, compile and engine settings change how generations are computed, not what they
    are: after a kill, a rerun with other values keeps every finished passage and generates only the rest;
    after a finished run, such a change is up to date. A result setting (sampling) still regenerates."""
    _use_engine(monkeypatch)
    reference = load_recipe(recipe_file("reference.yaml"))
    reference_dir = generate.run(reference, reference.run_dir)
    reference_rows = {(r["passage_index"], r["generation_index"]): r for r in _shard_rows(reference_dir)}

    recipe = load_recipe(recipe_file("killed.yaml"))
    _use_engine(monkeypatch, fail_on_call=3)  # passages 0-3 done (two shards of 2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        generate.run(recipe, recipe.run_dir)
    stage_dir = recipe.run_dir / "generate"
    fingerprint = json.loads((stage_dir / "shards" / "fingerprint.json").read_text())

    changed = load_recipe(recipe_file("killed.yaml", shard_size=3, batch_size=1, compile_decode=False,
                                      vllm={"gpu_memory_utilization": 0.5}))
    engines = _use_engine(monkeypatch)
    generate.run(changed, changed.run_dir)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["passages_resumed"] == 4 and stats["shards_resumed"] == 2
    assert json.loads((stage_dir / "shards" / "fingerprint.json").read_text()) == fingerprint
    passages = stats["passages"]
    assert len(engines[0].prompts) == passages - 4  # only the passages not yet generated
    names = sorted(p.name for p in (stage_dir / "shards").glob("*.jsonl"))
    assert names[:2] == ["shard-00000000-00000002.jsonl", "shard-00000002-00000004.jsonl"]
    assert names[2] == "shard-00000004-00000006.jsonl"  # the rest of the first 6-passage block, then blocks of 3
    rows = _shard_rows(stage_dir)
    assert sorted({r["passage_index"] for r in rows}) == list(range(passages))  # none lost, none doubled
    kept = [r for r in rows if r["passage_index"] < 4]
    assert kept == [reference_rows[(r["passage_index"], r["generation_index"])] for r in kept]  # as generated before
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["execution"]["shard_size"] == 3 and manifest["execution"]["batch_size"] == 1
    assert "shard_size" not in manifest["config"] and "batch_size" not in manifest["config"]

    # finished: an execution change is up to date, a result change regenerates
    engines = _use_engine(monkeypatch)
    generate.run(load_recipe(recipe_file("killed.yaml", shard_size=5, batch_size=2)), changed.run_dir)
    assert engines == []
    engines = _use_engine(monkeypatch)
    generate.run(load_recipe(recipe_file("killed.yaml", sampling={"n": 1, "temperature": 1.0, "max_tokens": 8,
                                                                  "seed": 1})), changed.run_dir)
    assert json.loads((stage_dir / "stats.json").read_text())["passages_resumed"] == 0 and engines[0].calls > 0


def test_vllm_gets_several_shards_per_call_and_each_shard_keeps_its_seed(recipe_file, monkeypatch):
    """engine: vllm (the vLLM double of tests/_fake_vllm.py): consecutive shards go to vLLM together, up to
    vllm.prompts_per_call prompts, so its batch does not drain at every shard; each shard is still written
    on its own with its own seed, as with one call per shard."""
    import _fake_vllm

    from bonito_adapt.generate.shards import shard_seed

    fake = _fake_vllm.install(monkeypatch)
    recipe = load_recipe(recipe_file(engine="vllm", vllm={"prompts_per_call": 4}, chunking={"max_tokens": 16}))
    with pytest.raises(UserError, match="no generation parsed"):  # the double never writes <|pipe|>
        generate.run(recipe, recipe.run_dir)
    shards = sorted((recipe.run_dir / "generate" / "shards").glob("shard-*.jsonl"))
    passages = sum(1 for path in shards for line in path.read_text().splitlines() if '"generation_index": 0' in line)
    assert len(shards) == -(-passages // 2) > 2
    sizes = [len(call["prompts"]) for call in fake.generate_calls]
    assert sum(sizes) == passages and sizes[0] == 4 and len(sizes) == -(-len(shards) // 2)  # two shards a call
    for path in shards:
        first = int(path.name.split("-")[1])
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert {row["generation"].rsplit("seed=", 1)[1] for row in rows} == {str(shard_seed(1, first))}


def test_balance_labels_evens_the_answers_and_keeps_the_dropped_rows(recipe_file, monkeypatch):
    """balance_labels 1.0: every answer of a closed-answer task type (nli here) at most as often as the rarest;
    the rows dropped are on disk with the filter's name, the counts before and after in stats.json."""
    from collections import Counter

    from bonito_adapt.generate.filters import answer_label

    _use_engine(monkeypatch)
    plain = load_recipe(recipe_file("plain.yaml"))
    everything = [json.loads(line) for line in
                  (generate.run(plain, plain.run_dir) / "tasks.jsonl").read_text().splitlines()]
    before = Counter(answer_label(t["output"]) for t in everything)
    assert len(before) > 1 and len(set(before.values())) > 1  # skewed, as a generator's answers are

    recipe = load_recipe(recipe_file("balanced.yaml", balance_labels=1.0))
    stage_dir = generate.run(recipe, recipe.run_dir)
    kept = [json.loads(line) for line in (stage_dir / "tasks.jsonl").read_text().splitlines()]
    dropped = [json.loads(line) for line in (stage_dir / "dropped.jsonl").read_text().splitlines()]
    after = Counter(answer_label(t["output"]) for t in kept)
    assert set(after.values()) == {min(before.values())} and set(after) == set(before)
    assert len(kept) + len(dropped) == len(everything) and all(d["dropped_by"] == "balance_labels" for d in dropped)
    assert sorted(map(json.dumps, kept + [{k: v for k, v in d.items() if k != "dropped_by"} for d in dropped])) == \
        sorted(map(json.dumps, everything))
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["balance_labels"]["before"] == dict(before) and stats["balance_labels"]["after"] == dict(after)
    assert stats["answers"] == dict(after.most_common(20)) and stats["tasks"] == len(kept)
    import datasets

    assert len(datasets.load_from_disk(str(stage_dir / "dataset"))) == len(kept)  # what training reads


def test_judge_asks_the_generator_and_drops_what_it_rejects(recipe_file, monkeypatch):
    """generate.judge: each parsed task goes back to the generator with the judge prompt (greedy); tasks whose
    verdict does not start with `accept` are dropped to dropped.jsonl; verdicts are cached for a rerun."""
    _use_engine(monkeypatch)
    judged: list[str] = []

    def judging_generate(self, prompts, sampling, _real=PipeEngine.generate):
        if prompts and prompts[0].startswith("JUDGE"):
            judged.extend(prompts)
            assert sampling.temperature == 0.0 and sampling.max_tokens == 3
            return [["Yes, it is." if len(p) % 3 else "no"] for p in prompts]
        return _real(self, prompts, sampling)

    monkeypatch.setattr(PipeEngine, "generate", judging_generate)
    recipe = load_recipe(recipe_file(judge={"prompt": "JUDGE {input} |{output}", "max_tokens": 3}))
    stage_dir = generate.run(recipe, recipe.run_dir)
    kept = [json.loads(line) for line in (stage_dir / "tasks.jsonl").read_text().splitlines()]
    dropped = [json.loads(line) for line in (stage_dir / "dropped.jsonl").read_text().splitlines()]
    assert kept and dropped and all(len(f"JUDGE {t['input']} |{t['output']}") % 3 for t in kept)
    assert all(d["dropped_by"] == "judge" and d["judge_verdict"] == "no" for d in dropped)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["judge"] == {"judged": len(kept) + len(dropped), "kept": len(kept), "dropped": len(dropped)}
    assert len(judged) == len(kept) + len(dropped)
    # a forced rerun regenerates nothing it has and asks the judge nothing it has asked
    judged.clear()
    (stage_dir / "manifest.json").unlink()
    generate.run(recipe, recipe.run_dir)
    assert judged == [] and [json.loads(line) for line in (stage_dir / "tasks.jsonl").read_text().splitlines()] == kept
    with pytest.raises(UserError, match="must contain {output}"):
        load_recipe(recipe_file("bad.yaml", judge={"prompt": "Is {input} right?"}))


def test_rerun_is_skipped_when_unchanged(recipe_file, monkeypatch, capsys):
    _use_engine(monkeypatch)
    recipe = load_recipe(recipe_file())
    stage_dir = generate.run(recipe, recipe.run_dir)
    before = (stage_dir / "manifest.json").read_text()
    engines = _use_engine(monkeypatch)
    assert generate.run(recipe, recipe.run_dir) == stage_dir
    assert engines == []  # not even loaded
    assert "skipped (up to date)" in capsys.readouterr().err
    assert (stage_dir / "manifest.json").read_text() == before


def test_rerun_when_config_or_input_changes(recipe_file, corpus, monkeypatch):
    _use_engine(monkeypatch)
    recipe = load_recipe(recipe_file())
    stage_dir = generate.run(recipe, recipe.run_dir)
    first = json.loads((stage_dir / "manifest.json").read_text())["fingerprint"]
    first_rows = _shard_rows(stage_dir)

    changed = load_recipe(recipe_file(sampling={"n": 2, "temperature": 1.0, "max_tokens": 8, "seed": 2}))
    engines = _use_engine(monkeypatch)
    generate.run(changed, changed.run_dir)
    assert engines and engines[0].calls > 0
    second = json.loads((stage_dir / "manifest.json").read_text())["fingerprint"]
    assert second != first
    assert json.loads((stage_dir / "stats.json").read_text())["shards_resumed"] == 0  # old shards not reused
    assert _shard_rows(stage_dir) != first_rows

    (corpus / "policy.txt").write_text("A new policy text.\n\nWith a second paragraph of its own.")
    engines = _use_engine(monkeypatch)
    generate.run(changed, changed.run_dir)
    assert engines and json.loads((stage_dir / "manifest.json").read_text())["fingerprint"] != second


def test_no_parsed_generation_is_a_user_error_and_keeps_shards(recipe_file, monkeypatch):
    _use_engine(monkeypatch, pipes=False)
    recipe = load_recipe(recipe_file())
    with pytest.raises(UserError, match=r"parse rate 0% .*style: prompted.*max_tokens") as error:
        generate.run(recipe, recipe.run_dir)
    assert "\n" not in str(error.value)
    stage_dir = recipe.run_dir / "generate"
    assert _shard_rows(stage_dir) and not (stage_dir / "manifest.json").exists()
    assert not (stage_dir / "tasks.jsonl").exists()


def test_prompted_style_builds_chat_templated_prompts(recipe_file, monkeypatch):
    engines = _use_engine(monkeypatch)
    recipe = load_recipe(recipe_file(style="prompted", task_type="ynqa", chunking={"max_tokens": 200}))
    stage_dir = generate.run(recipe, recipe.run_dir)
    prompt = engines[0].prompts[0]
    # The tiny tokenizer's ChatML template: worked examples as earlier turns, then the passage.
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>assistant\n") == 3 and INSTRUCTIONS["ynqa"] in prompt
    assert any(text in prompt for text in DOCUMENTS.values())
    task = json.loads((stage_dir / "tasks.jsonl").read_text().splitlines()[0])
    assert task["input"].startswith(task["context"])  # prompted tasks carry their passage


def test_prompted_style_needs_a_chat_template(tiny_model_dir, tiny_tokenizer):
    from bonito_adapt.generate.config import GenerateConfig

    config = GenerateConfig(input={"files": ["x"]}, task_type="qa", model=str(tiny_model_dir), style="prompted")
    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        TaskFormat(config.style, config.task_type, tokenizer=tokenizer, spec=config.engine_spec())


def test_passage_limit_fits_the_context(tiny_model_dir):
    from bonito_adapt.generate.config import GenerateConfig

    config = GenerateConfig(input={"files": ["x"]}, task_type="qa", model=str(tiny_model_dir),
                            sampling={"max_tokens": 600})
    engine = TransformersEngine(config.engine_spec())
    task_format = TaskFormat(config.style, config.task_type, spec=config.engine_spec())
    limit = passage_token_limit(config, engine, task_format)
    overhead = engine.count_tokens(task_format.prompt("x"))
    assert 16 <= limit and limit + overhead + 600 <= engine.max_context  # 1024
    too_long = config.model_copy(update={"chunking": config.chunking.model_copy(update={"max_tokens": 900})})
    with pytest.raises(UserError, match="chunking.max_tokens"):
        passage_token_limit(too_long, engine, task_format)
    no_room = config.model_copy(update={"sampling": config.sampling.model_copy(update={"max_tokens": 1020})})
    with pytest.raises(UserError, match="sampling.max_tokens"):
        passage_token_limit(no_room, engine, task_format)


def test_cli_runs_the_stage(recipe_file, monkeypatch, capsys):
    _use_engine(monkeypatch)
    path = recipe_file()
    assert main(["generate", str(path)]) == 0
    assert (path.parent / "out-recipe" / "generate" / "tasks.jsonl").is_file()
    assert main(["run", str(path), "generate.input.files=[missing-folder]"]) == 2
    assert "nothing matches" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_recipe_with_smollm2(smollm2_dir, tmp_path, capsys):
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
    # The shipped recipe's generate stage, smaller: three documents, one sample per passage.
    code = main(["run", str(recipe), f"output_dir={tmp_path / 'quickstart'}", f"generate.model={smollm2_dir}",
                 "generate.input.max_documents=3", "generate.sampling.n=1", "--stages", "generate"])
    assert code == 0, capsys.readouterr().err
    stage_dir = tmp_path / "quickstart" / "generate"
    stats = json.loads((stage_dir / "stats.json").read_text())
    tasks = [json.loads(line) for line in (stage_dir / "tasks.jsonl").read_text().splitlines()]
    assert stats["documents"] == 3 and stats["generations"] == stats["passages"] >= 3
    assert stats["parse_rate"] > 0 and stats["tasks"] == len(tasks) >= 1
    for task in tasks:
        assert task["task_type"] == "ynqa" and task["output"] and task["input"].startswith(task["context"])
    assert "parse rate" in capsys.readouterr().out


def test_two_processes_under_torchrun_split_the_shards_and_write_one_run(recipe_file, tmp_path, tiny_model_dir):
    """Data parallel on CPU (gloo): each process generates every other shard with its own engine;
    the shards, tasks and stats equal one process's run of the same recipe. A train stage next in
    the same launch trains on them over both processes."""
    import os
    import subprocess
    import sys

    import yaml

    child = str(Path(__file__).resolve().parents[1] / "_interrupt_child.py")  # shapes completions to parse
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BONITO_TEST_MARKS": str(marks)}
    parallel, single = recipe_file("parallel.yaml"), recipe_file("single.yaml")
    with_train = yaml.safe_load(parallel.read_text())
    with_train["train"] = {"model": str(tiny_model_dir), "quantization": "auto", "max_steps": 2,
                           "effective_batch_size": 4, "max_length": 64, "gradient_checkpointing": False}
    parallel.write_text(yaml.safe_dump(with_train))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           child, "run", str(parallel), "--stages", "generate,train"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    by_process = sorted(mark.name.split("-")[1] for mark in marks.iterdir())
    assert by_process.count("0") >= 2 and by_process.count("1") >= 2  # each process took its own shards
    alone = subprocess.run([sys.executable, child, "run", str(single), "--stages", "generate"],
                           capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]

    both, one = tmp_path / "out-parallel" / "generate", tmp_path / "out-single" / "generate"
    shards = sorted(path.name for path in (both / "shards").glob("shard-*.jsonl"))
    assert len(shards) == len(by_process) and shards == sorted(path.name for path in (one / "shards").glob("shard-*.jsonl"))
    assert _shard_rows(both) == _shard_rows(one)
    assert (both / "tasks.jsonl").read_text() == (one / "tasks.jsonl").read_text()
    stats, stats_alone = (json.loads((d / "stats.json").read_text()) for d in (both, one))
    assert stats["generated_tokens"] == stats_alone["generated_tokens"] and stats["shards_resumed"] == 0
    assert json.loads((both / "manifest.json").read_text())["counts"]["tasks"] == stats["tasks"] > 0
    trained = json.loads((tmp_path / "out-parallel" / "train" / "stats.json").read_text())
    assert trained["setup"]["world_size"] == 2 and trained["steps"] == 2


def test_engines_that_spread_work_themselves_refuse_a_multi_process_launch(recipe_file, monkeypatch):
    class SecondOfTwo:
        rank, count = 1, 2

    monkeypatch.setattr(generate_stage, "Processes", SecondOfTwo)
    recipe = load_recipe(recipe_file(engine="openai", openai={"base_urls": ["http://127.0.0.1:9/v1"]}))
    with pytest.raises(UserError, match="without torchrun / accelerate launch, or use engine: transformers"):
        generate.run(recipe, recipe.run_dir)
    assert not (recipe.run_dir / "generate").exists()
