"""The unannotated text: load documents, then split them into passages that fit the generator.

Sources (`generate.input`): a Hugging Face dataset (hub id, or a local `save_to_disk` folder), or
local files: `.jsonl`/`.json`/`.csv`/`.parquet` tables (one document per row, text in
`context_col`; `.jsonl`/`.json`/`.csv` may be gzipped, e.g. `.jsonl.gz`), `.txt`/`.md` files (one document per file), folders of `.txt`/`.md` documents, and
globs of any of these.

Splitting is token-aware: whole paragraphs are packed into a passage while they fit; a paragraph
that does not fit alone is split into lines, then sentences, then words, then character windows
(for a giant "word" such as a base64 blob). Consecutive passages of one document can share up to
`overlap_tokens` tokens, taken from the end of the previous passage on the finest boundary needed.
"""

from __future__ import annotations

import glob
import gzip
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..file_formats import DOCUMENT_SUFFIXES, TABLE_FORMATS, data_load_errors, table_builder, table_suffix
from ..rundir import config_hash, hash_files
from .config import ChunkingConfig, InputConfig
from .documents import RICH_DOCUMENT_SUFFIXES, read_rich_document

__all__ = [
    "Document",
    "Passage",
    "ChunkStats",
    "resolve_input_files",
    "input_fingerprint",
    "load_documents",
    "split_text",
    "make_passages",
]

_DOCUMENTS = (*DOCUMENT_SUFFIXES, *RICH_DOCUMENT_SUFFIXES)
_SUPPORTED = ", ".join([TABLE_FORMATS, *_DOCUMENTS])

# Boundaries from coarsest to finest; a piece is split at a finer one only if it does not fit.
_PARAGRAPH, _LINE, _SENTENCE, _WORD, _CHARS = range(5)
_SPLITTERS = {
    _PARAGRAPH: re.compile(r"\n[ \t]*\n\s*"),
    _LINE: re.compile(r"\s*\n\s*"),
    _SENTENCE: re.compile(r"(?<=[.!?])\s+"),
    _WORD: re.compile(r"\s+"),
}
_JOINERS = {_PARAGRAPH: "\n\n", _LINE: "\n", _SENTENCE: " ", _WORD: " ", _CHARS: ""}


@dataclass(frozen=True)
class Document:
    text: str
    source_id: str


@dataclass(frozen=True)
class Passage:
    text: str
    source_id: str


@dataclass
class ChunkStats:
    documents: int = 0
    passages: int = 0
    short_passages_dropped: int = 0
    duplicate_passages_dropped: int = 0
    per_source: dict[str, int] = field(default_factory=dict, repr=False)


# ---------------------------------------------------------------- loading


def resolve_input_files(config: InputConfig) -> list[tuple[Path, str]]:
    """Expand `files` (paths, globs, folders) into `(file, source_name)` pairs, sorted and unique.

    A folder contributes its `.txt`/`.md` files (recursively) named by their path relative to it.
    """
    found: dict[Path, str] = {}
    for entry in config.files:
        matches = sorted(glob.glob(entry, recursive=True)) if glob.has_magic(entry) else [entry]
        matches = [Path(m) for m in matches if Path(m).exists()]
        if not matches:
            raise UserError(f"generate.input.files: nothing matches {entry!r}; check the path (relative paths "
                            "are relative to the recipe file)")
        for match in matches:
            if match.is_dir():
                members = sorted(p for p in match.rglob("*") if p.is_file() and p.suffix.lower() in _DOCUMENTS
                                 and not any(part.startswith(".") for part in p.relative_to(match).parts))
                if not members:
                    raise UserError(f"generate.input.files: folder {str(match)!r} holds no {', '.join(_DOCUMENTS)} documents; "
                                    "add some or list the data files themselves")
                for member in members:
                    found.setdefault(member, member.relative_to(match).as_posix())
            elif table_suffix(match) or match.suffix.lower() in _DOCUMENTS:
                found.setdefault(match, match.name)
            elif not glob.has_magic(entry):
                raise UserError(f"generate.input.files: {str(match)!r} has an unsupported type; use {_SUPPORTED} "
                                "files or a folder of documents")
    if not found:
        raise UserError(f"generate.input.files: no {_SUPPORTED} files match {config.files!r}")
    return sorted(found.items())


def input_fingerprint(config: InputConfig) -> dict[str, str]:
    """What identifies the input without reading it all: file contents, or the dataset's id/config/split."""
    keys = {"context_col": config.context_col, "id_col": config.id_col, "max_documents": config.max_documents}
    if config.files:
        files = [path for path, _ in resolve_input_files(config)]
        return {"corpus_files": hash_files(files), "corpus_options": config_hash(keys)}
    dataset = Path(config.dataset)
    if dataset.is_dir():
        return {"corpus_dataset": hash_files(p for p in dataset.rglob("*") if p.is_file()),
                "corpus_options": config_hash({**keys, "split": config.split})}
    return {"corpus_dataset": f"{config.dataset}|{config.dataset_config}|{config.split}",
            "corpus_options": config_hash(keys)}


def _read_document_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(f"generate.input.files: cannot read {str(path)!r} ({error.strerror}); check its permissions") from None
    if not raw.strip():
        raise UserError(f"generate.input.files: {str(path)!r} is empty; remove it or give it some text")
    if b"\x00" in raw[:8192]:
        raise UserError(f"generate.input.files: {str(path)!r} is a binary file, not text; remove it from the input")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"generate.input.files: {str(path)!r} is not UTF-8 text; convert it to UTF-8") from None


def _check_table_file(path: Path) -> None:
    compressed = path.suffix.lower() == ".gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as handle:
            head = handle.read(8192)
    except (gzip.BadGzipFile, EOFError):
        raise UserError(f"generate.input.files: {str(path)!r} is not a complete gzip file; fix the file or drop "
                        "its .gz extension") from None
    except OSError as error:
        raise UserError(f"generate.input.files: cannot read {str(path)!r} ({error.strerror}); check its permissions") from None
    if not head.strip():
        raise UserError(f"generate.input.files: {str(path)!r} is empty; remove it or give it some rows")
    if table_suffix(path) != ".parquet" and b"\x00" in head:
        raise UserError(f"generate.input.files: {str(path)!r} is a binary file, not {table_suffix(path)} text; "
                        "fix the file or its extension")


def _missing_column(config: InputConfig, column: str, what: str, columns: Iterable[str]) -> UserError:
    field_name = "context_col" if column == config.context_col else "id_col"
    return UserError(f"generate.input.{field_name}: column {column!r} is not in {what}; its columns are "
                     f"{', '.join(columns)}; set {field_name} to one of them")


def _rows_to_documents(config: InputConfig, dataset, what: str, default_id: Callable[[int], str]) -> list[Document]:
    for column in (config.context_col, config.id_col):
        if column is not None and column not in dataset.column_names:
            raise _missing_column(config, column, what, dataset.column_names)
    if config.max_documents is not None:
        dataset = dataset.select(range(min(config.max_documents, len(dataset))))
    texts = dataset[config.context_col]
    ids = dataset[config.id_col] if config.id_col else [default_id(i) for i in range(len(dataset))]
    return [Document(text if isinstance(text, str) else str(text), str(source_id))
            for text, source_id in zip(texts, ids, strict=True) if text is not None]


def _load_table(config: InputConfig, path: Path, name: str) -> list[Document]:
    import datasets

    _check_table_file(path)
    try:
        table = datasets.load_dataset(table_builder(path), data_files=str(path), split="train")
    except data_load_errors() as error:  # a malformed file; anything else is a bug
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"generate.input.files: cannot parse {str(path)!r} as {table_suffix(path)} ({detail}); "
                        "fix the file") from None
    return _rows_to_documents(config, table, f"{str(path)!r}", lambda i: f"{name}:{i}")


def _load_dataset(config: InputConfig) -> list[Document]:
    import datasets

    where = f"dataset {config.dataset!r}"
    try:
        if Path(config.dataset).is_dir():
            loaded = datasets.load_from_disk(config.dataset)
            if isinstance(loaded, datasets.DatasetDict):
                if config.split not in loaded:
                    raise UserError(f"generate.input.split: {where} has no split {config.split!r}; "
                                    f"its splits are {', '.join(loaded)}")
                loaded = loaded[config.split]
        else:
            loaded = datasets.load_dataset(config.dataset, config.dataset_config, split=config.split)
    except data_load_errors() as error:  # hub, network and format errors become one line; anything else is a bug
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"generate.input.dataset: could not load {where} (config {config.dataset_config!r}, split "
                        f"{config.split!r}): {detail}; check the id, dataset_config and split, or use local files") from None
    return _rows_to_documents(config, loaded, where, str)


def load_documents(config: InputConfig) -> list[Document]:
    """Read every document of the input, in a stable order, honouring `max_documents`."""
    if config.dataset:
        return _load_dataset(config)
    documents: list[Document] = []
    for path, name in resolve_input_files(config):
        if config.max_documents is not None and len(documents) >= config.max_documents:
            break
        if path.suffix.lower() in DOCUMENT_SUFFIXES:
            documents.append(Document(_read_document_file(path), name))
        elif path.suffix.lower() in RICH_DOCUMENT_SUFFIXES:
            documents.append(Document(read_rich_document(path), name))
        else:
            documents.extend(_load_table(config, path, name))
    return documents[: config.max_documents] if config.max_documents is not None else documents


# ---------------------------------------------------------------- splitting


@dataclass
class _Piece:
    text: str
    tokens: int
    level: int  # the boundary that precedes this piece within its document


def _split_at(text: str, level: int) -> list[str]:
    parts = _SPLITTERS[level].split(text) if level in _SPLITTERS else []
    return [p.strip() for p in parts if p.strip()]


def _char_windows(text: str, limit: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Longest prefixes that fit `limit` tokens (binary search on characters): token windows for any tokenizer."""
    windows = []
    while text:
        low, high = 1, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens(text[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        windows.append(text[:low])
        text = text[low:]
    return windows


def _pieces(text: str, level: int, limit: int, count_tokens: Callable[[str], int]) -> list[_Piece]:
    """Split `text` at `level`; pieces that still do not fit are split at the next finer level."""
    if level == _CHARS:
        return [_Piece(w, count_tokens(w), _CHARS) for w in _char_windows(text, limit, count_tokens)]
    pieces: list[_Piece] = []
    for part in _split_at(text, level):
        tokens = count_tokens(part)
        if tokens <= limit:
            pieces.append(_Piece(part, tokens, level))
        else:
            finer = _pieces(part, level + 1, limit, count_tokens)
            finer[0].level = level  # the first piece still starts at this part's boundary
            pieces.extend(finer)
    return pieces


def _join(pieces: list[_Piece]) -> str:
    text = pieces[0].text
    for piece in pieces[1:]:
        text += _JOINERS[piece.level] + piece.text
    return text


def _overlap_tail(pieces: list[_Piece], budget: int, count_tokens: Callable[[str], int]) -> list[_Piece]:
    """The trailing text of a passage worth at most `budget` tokens, cut on the finest boundary needed."""
    tail: list[_Piece] = []
    for piece in reversed(pieces):
        joint = 1 if tail else 0
        if piece.tokens + joint <= budget:
            tail.insert(0, piece)
            budget -= piece.tokens + joint
            continue
        if piece.level < _CHARS and budget - joint > 0:
            finer = _pieces(piece.text, piece.level + 1, budget - joint, count_tokens)
            tail[:0] = _overlap_tail(finer, budget - joint, count_tokens)
        break
    return tail


def split_text(text: str, max_tokens: int, count_tokens: Callable[[str], int], overlap_tokens: int = 0) -> list[str]:
    """Split one document into passages of at most `max_tokens` tokens (see the module docstring)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return []
    if count_tokens(text) <= max_tokens:
        return [text]
    overlap_tokens = min(overlap_tokens, max_tokens // 2)  # each passage must still add new text
    pieces = _pieces(text, _PARAGRAPH, max_tokens, count_tokens)
    passages: list[str] = []
    current: list[_Piece] = []
    current_tokens = 0
    fresh = False  # does `current` hold anything beyond the overlap carried from the last passage?
    index = 0
    while index < len(pieces):
        piece = pieces[index]
        # +1 per joint: separators and merges across joints rarely cost more than one token.
        cost = piece.tokens + (1 if current else 0)
        if current and current_tokens + cost > max_tokens:
            # The estimate is pessimistic (a joint usually merges into the next token): check exactly.
            exact = count_tokens(_join([*current, piece]))
            if exact <= max_tokens:
                current.append(piece)
                current_tokens, fresh = exact, True
                index += 1
                continue
            if fresh:
                passages.append(_join(current))
                current = _overlap_tail(current, overlap_tokens, count_tokens) if overlap_tokens else []
                current_tokens = sum(p.tokens for p in current) + max(len(current) - 1, 0)
            else:  # carried overlap plus this piece do not fit: drop the overlap
                current, current_tokens = [], 0
            fresh = False
            continue
        current.append(piece)
        current_tokens += cost
        fresh = True
        index += 1
    if current and fresh:
        passages.append(_join(current))
    return [_fit(p, max_tokens, count_tokens) for p in passages]


def _fit(passage: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """Guard the estimate: trim the (rare) passage whose exact count exceeds the limit."""
    if count_tokens(passage) <= max_tokens:
        return passage
    return _char_windows(passage, max_tokens, count_tokens)[0]


def make_passages(documents: Iterable[Document], chunking: ChunkingConfig, max_tokens: int,
                  count_tokens: Callable[[str], int]) -> tuple[list[Passage], ChunkStats]:
    """Split every document, drop short passages and (if configured) exact duplicates."""
    stats = ChunkStats()
    passages: list[Passage] = []
    seen: set[str] = set()
    for document in documents:
        stats.documents += 1
        for text in split_text(document.text, max_tokens, count_tokens, chunking.overlap_tokens):
            text = text.strip()
            if len(text) < chunking.min_chars:
                stats.short_passages_dropped += 1
                continue
            if chunking.dedupe:
                if text in seen:
                    stats.duplicate_passages_dropped += 1
                    continue
                seen.add(text)
            passages.append(Passage(text, document.source_id))
    stats.passages = len(passages)
    return passages, stats
