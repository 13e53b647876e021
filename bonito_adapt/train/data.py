"""Training data: the sources of `train.datasets`, their fingerprints, the mixture, and the format.

Examples are prompt/completion pairs: `training_prompt(input)` / `output` (TRL appends EOS), or a
one-turn conversation through the model's chat template (`format: chat`).
"""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import UserError
from ..file_formats import TABLE_FORMATS, data_load_errors, table_builder
from ..rundir import hash_files, upstream_fingerprint
from .config import TrainConfig, TrainDatasetConfig

__all__ = ["training_prompt", "source_fingerprints", "load_training_data"]


def training_prompt(task_input: str) -> str:
    """The prompt an adapted model sees, as the paper trains and evaluates: the stripped input between the tags
    (training/train_decoder.py `preprocess_function`; the BOS comes from the tokenizer)."""
    return f"<|input|>\n{task_input.strip()}\n<|output|>\n"


def _source_name(source: TrainDatasetConfig, index: int) -> str:
    return f"train.datasets[{index}] ({source.path})"


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists()


def _source_files(source: TrainDatasetConfig, run_dir: Path) -> list[Path]:
    if source.path == "generate":
        return []
    if glob.has_magic(source.path):
        return sorted(Path(p) for p in glob.glob(source.path))
    path = Path(source.path).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def source_fingerprints(config: TrainConfig, run_dir: Path) -> dict[str, str]:
    """Input fingerprints: the generate stage's, local files' content hashes, hub ids as written."""
    inputs = {}
    for index, source in enumerate(config.datasets):
        key = f"datasets[{index}]"
        if source.path == "generate":
            inputs[key] = upstream_fingerprint(run_dir, "generate")
        elif files := _source_files(source, run_dir):
            inputs[key] = hash_files(files)
        else:
            inputs[key] = f"hub:{source.path}:{source.dataset_config}:{source.split}"
    return inputs


def _load_source(source: TrainDatasetConfig, index: int, run_dir: Path):
    from datasets import DatasetDict, load_dataset, load_from_disk

    name = _source_name(source, index)
    try:
        if source.path == "generate":
            folder = Path(run_dir) / "generate" / "dataset"
            if not folder.is_dir():
                raise UserError(f"{name}: {str(folder)!r} does not exist; run the generate stage first")
            data = load_from_disk(str(folder))
        elif glob.has_magic(source.path) or Path(source.path).expanduser().is_file():
            files = _source_files(source, run_dir)
            builders = {table_builder(p) for p in files}
            if not files or len(builders) != 1 or None in builders:
                suffixes = sorted({"".join(p.suffixes[-2:]) for p in files})
                raise UserError(f"{name}: give {TABLE_FORMATS} files of one kind "
                                f"(got {', '.join(suffixes) or 'no file'})")
            data = load_dataset(builders.pop(), data_files=[str(p) for p in files], split="train")
        elif Path(source.path).expanduser().is_dir():
            folder = Path(source.path).expanduser()
            saved = any((folder / marker).is_file() for marker in ("state.json", "dataset_dict.json"))
            data = load_from_disk(str(folder)) if saved else load_dataset(str(folder), split=source.split)
        elif _looks_local(source.path):
            raise UserError(f"{name}: path does not exist; give a save_to_disk folder, data files or a hub id")
        else:
            data = load_dataset(source.path, source.dataset_config, split=source.split)
    except data_load_errors() as error:  # missing, unreachable or malformed data; anything else is a bug
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{name}: could not load the dataset ({detail}); check path, dataset_config and split") \
            from None
    if isinstance(data, DatasetDict):
        if source.split not in data:
            raise UserError(f"{name}: no split {source.split!r}; it has {', '.join(data)}; set split")
        data = data[source.split]
    missing = [c for c in (source.input_col, source.output_col) if c not in data.column_names]
    if missing:
        raise UserError(f"{name}: no column {', '.join(map(repr, missing))}; it has columns "
                        f"{', '.join(data.column_names)}; set input_col/output_col")
    return data


def _to_prompt_completion(data, source: TrainDatasetConfig, fmt: str):
    def convert(row):
        task_input, task_output = str(row[source.input_col]), str(row[source.output_col])
        if fmt == "chat":
            return {"prompt": [{"role": "user", "content": task_input}],
                    "completion": [{"role": "assistant", "content": task_output}]}
        # TRL appends the EOS token to the completion (non-conversational prompt/completion data); the paper
        # strips the output, as the input.
        return {"prompt": training_prompt(task_input), "completion": task_output.strip()}

    data = data.filter(lambda row: row[source.input_col] is not None and row[source.output_col] is not None)
    return data.map(convert, remove_columns=data.column_names)


def load_training_data(config: TrainConfig, run_dir: Path):
    """All sources as one prompt/completion `datasets.Dataset`, mixed by weight.

    Several sources are mixed with `datasets.interleave_datasets` (probabilities = normalised
    weights, seed = train.seed, stopping strategy = train.mixing), so the mixture is the same on
    every rerun and every process.
    """
    from datasets import interleave_datasets

    parts = [_to_prompt_completion(_load_source(s, i, run_dir), s, config.format)
             for i, s in enumerate(config.datasets)]
    for index, part in enumerate(parts):
        if len(part) == 0:
            raise UserError(f"{_source_name(config.datasets[index], index)}: no examples; check the dataset")
    if len(parts) == 1:
        return parts[0]
    total = sum(s.weight for s in config.datasets)
    return interleave_datasets(parts, probabilities=[s.weight / total for s in config.datasets],
                               seed=config.seed, stopping_strategy=config.mixing)
