"""The one map of file formats, and that every stage reads the same table files through it."""

import json

import pytest

from bonito_adapt.file_formats import TABLE_FORMATS, table_builder, table_suffix


@pytest.mark.parametrize("name, suffix, builder", [
    ("a.jsonl", ".jsonl", "json"), ("a.JSON", ".json", "json"), ("a.csv", ".csv", "csv"),
    ("a.parquet", ".parquet", "parquet"), ("a.jsonl.gz", ".jsonl", "json"), ("dir.v2/a.csv.gz", ".csv", "csv"),
    ("a.parquet.gz", None, None), ("a.txt", None, None), ("a.gz", None, None),
])
def test_table_suffix_and_builder(name, suffix, builder):
    assert table_suffix(name) == suffix and table_builder(name) == builder


def test_every_stage_reads_a_gzipped_jsonl_table(tmp_path):
    import gzip

    from bonito_adapt.evaluate.tasks import data_file_overrides
    from bonito_adapt.generate.config import InputConfig
    from bonito_adapt.generate.corpus import load_documents
    from bonito_adapt.train.config import TrainConfig
    from bonito_adapt.train.data import load_training_data

    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for i in range(3):
            handle.write(json.dumps({"text": f"passage {i}", "input": f"q{i}", "output": "a"}) + "\n")
    assert [d.text for d in load_documents(InputConfig(files=[str(path)]))] == ["passage 0", "passage 1", "passage 2"]
    assert len(load_training_data(TrainConfig(datasets=[{"path": str(path)}]), tmp_path)) == 3
    assert data_file_overrides(str(path), "t")["dataset_path"] == "json"
    assert ".jsonl.gz" in TABLE_FORMATS and ".parquet" in TABLE_FORMATS
