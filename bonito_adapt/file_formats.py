"""The one map of file formats: which local files each stage reads, and the `datasets` builder for each.

Tables (one record per row) are read with `datasets.load_dataset(builder, data_files=...)`;
`.jsonl`, `.json` and `.csv` may be gzipped (`data.jsonl.gz`), which datasets decompresses
itself. Documents (`.txt`, `.md`) are whole texts, read by the generate stage's corpus loader.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TABLE_BUILDERS", "GZIPPABLE", "DOCUMENT_SUFFIXES", "TABLE_FORMATS", "table_suffix", "table_builder",
           "data_load_errors"]

# Table suffix -> the `datasets` builder that reads it.
TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
GZIPPABLE = (".jsonl", ".json", ".csv")
DOCUMENT_SUFFIXES = (".txt", ".md")
# For messages: every table format, gzipped ones included.
TABLE_FORMATS = ", ".join([*TABLE_BUILDERS, *(f"{suffix}.gz" for suffix in GZIPPABLE)])


def table_suffix(path: str | Path) -> str | None:
    """`.jsonl` for data.jsonl and data.jsonl.gz (a key of TABLE_BUILDERS); None if `path` is no table."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes[-2:]]
    if len(suffixes) == 2 and suffixes[1] == ".gz" and suffixes[0] in GZIPPABLE:
        return suffixes[0]
    suffix = Path(path).suffix.lower()
    return suffix if suffix in TABLE_BUILDERS else None


def table_builder(path: str | Path) -> str | None:
    """The `datasets` builder name for a table file (json, csv, parquet), or None."""
    suffix = table_suffix(path)
    return TABLE_BUILDERS[suffix] if suffix else None


def data_load_errors() -> tuple[type[BaseException], ...]:
    """What `datasets` raises for data it cannot find, read or parse (missing files, hub and network errors,
    malformed JSON/CSV/Parquet): the errors a loader turns into one line naming the data. Anything else (a
    TypeError, an AttributeError from a library version mismatch) is a bug and is not relabelled."""
    import datasets.exceptions
    import pyarrow

    return (OSError, ValueError, datasets.exceptions.DatasetsError, pyarrow.ArrowException)
