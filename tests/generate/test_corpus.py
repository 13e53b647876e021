"""Loading input text and splitting it into passages."""

from __future__ import annotations

import json

import pytest

from bonito_adapt.errors import UserError
from bonito_adapt.generate.config import ChunkingConfig, InputConfig
from bonito_adapt.generate.corpus import (
    Document,
    input_fingerprint,
    load_documents,
    make_passages,
    resolve_input_files,
    split_text,
)


def count_words(text: str) -> int:
    return len(text.split())


def _document(paragraph_lengths: list[int]) -> str:
    """Paragraphs of numbered words (p<paragraph>w<word>), a sentence end every 5 words."""
    paragraphs = []
    for p, length in enumerate(paragraph_lengths):
        words = [f"p{p}w{i}" + ("." if i % 5 == 4 else "") for i in range(length)]
        paragraphs.append(" ".join(words))
    return "\n\n".join(paragraphs)


def _words(passages: list[str]) -> list[str]:
    return [w.rstrip(".") for p in passages for w in p.split()]


# ---------------------------------------------------------------- splitting


def test_short_document_is_one_passage():
    assert split_text("  one short text.  ", 10, count_words) == ["one short text."]


def test_whole_paragraphs_are_kept_together_when_they_fit():
    text = _document([4, 4, 4])
    passages = split_text(text, 9, count_words)
    # Two 4-word paragraphs (+1 joint) fit in 9; the third starts a new passage on a paragraph boundary.
    assert passages == ["p0w0 p0w1 p0w2 p0w3\n\np1w0 p1w1 p1w2 p1w3", "p2w0 p2w1 p2w2 p2w3"]


def test_long_paragraph_is_split_on_sentence_boundaries():
    passages = split_text(_document([20]), 10, count_words)
    assert all(count_words(p) <= 10 for p in passages)
    assert all(p.endswith(".") for p in passages)  # every cut falls after a sentence
    assert _words(passages) == _words([_document([20])])  # nothing lost, nothing repeated


def test_giant_sentence_falls_back_to_word_then_character_windows():
    giant_sentence = " ".join(f"w{i}" for i in range(25))  # no sentence end at all
    passages = split_text(giant_sentence, 10, count_words)
    assert [count_words(p) for p in passages] == [10, 10, 5]
    blob = "x" * 95  # one "word" longer than the limit: character windows, by token count
    count_chars_in_tens = lambda t: (len(t) + 9) // 10  # noqa: E731
    windows = split_text(blob, 3, count_chars_in_tens)
    assert "".join(windows) == blob and all(count_chars_in_tens(w) <= 3 for w in windows)


def test_overlap_repeats_the_end_of_the_previous_passage():
    text = _document([30])
    plain = split_text(text, 12, count_words)
    overlapped = split_text(text, 12, count_words, overlap_tokens=5)
    assert all(count_words(p) <= 12 for p in overlapped)
    assert len(overlapped) > len(plain)
    for previous, following in zip(overlapped, overlapped[1:], strict=False):
        shared = following.split()[:5]
        assert previous.split()[-5:] == shared  # 5-word sentences: the overlap is the last sentence
    # Every word is covered, in order, once duplicates from the overlap are removed.
    seen = list(dict.fromkeys(_words(overlapped)))
    assert seen == _words([text])


def test_overlap_larger_than_half_the_limit_still_progresses():
    passages = split_text(_document([40]), 10, count_words, overlap_tokens=50)
    assert all(count_words(p) <= 10 for p in passages)
    assert _words([passages[-1]])[-1] == "p0w39"


def test_real_tokenizer_limits_hold(tiny_tokenizer):
    def count(text: str) -> int:
        return len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])

    text = ("The receiving party shall not disclose confidential information. " * 30 + "\n\n") * 3
    for overlap in (0, 12):
        passages = split_text(text, 40, count, overlap_tokens=overlap)
        assert len(passages) > 3 and all(count(p) <= 40 for p in passages)


def test_make_passages_drops_short_and_duplicate_passages():
    documents = [
        Document("A first document that is long enough.", "a"),
        Document("A first document that is long enough.", "b"),  # exact duplicate
        Document("tiny", "c"),
        Document("   \n\n  ", "d"),  # empty
        Document("Another document, also long enough.", "e"),
    ]
    passages, stats = make_passages(documents, ChunkingConfig(min_chars=10), 100, count_words)
    assert [p.source_id for p in passages] == ["a", "e"]
    assert (stats.documents, stats.passages, stats.duplicate_passages_dropped, stats.short_passages_dropped) == (
        5, 2, 1, 1)
    kept, stats = make_passages(documents, ChunkingConfig(min_chars=10, dedupe=False), 100, count_words)
    assert [p.source_id for p in kept] == ["a", "b", "e"] and stats.duplicate_passages_dropped == 0


# ---------------------------------------------------------------- loading


def _input(**kwargs) -> InputConfig:
    return InputConfig(**kwargs)


def test_folder_of_documents_one_per_file(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n\nAlpha text.")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("Beta text.")
    (tmp_path / "docs" / "ignored.csv").write_text("text\nnot a document\n")
    documents = load_documents(_input(files=[str(tmp_path / "docs")]))
    assert [(d.source_id, d.text) for d in documents] == [("a.md", "# A\n\nAlpha text."), ("sub/b.txt", "Beta text.")]


def test_tables_and_globs(tmp_path):
    rows = [{"body": "first row", "id": "r1"}, {"body": "second row", "id": "r2"}]
    (tmp_path / "part1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "part2.csv").write_text("body,id\nthird row,r3\n")
    documents = load_documents(_input(files=[str(tmp_path / "part*")], context_col="body"))
    assert [(d.source_id, d.text) for d in documents] == [
        ("part1.jsonl:0", "first row"), ("part1.jsonl:1", "second row"), ("part2.csv:0", "third row")]
    with_ids = load_documents(_input(files=[str(tmp_path / "part1.jsonl")], context_col="body", id_col="id"))
    assert [d.source_id for d in with_ids] == ["r1", "r2"]
    limited = load_documents(_input(files=[str(tmp_path / "part*")], context_col="body", max_documents=2))
    assert len(limited) == 2


def test_gzipped_tables(tmp_path):
    """.jsonl.gz (the shared benchmark files' format, which evaluate.data_files also takes), .json.gz, .csv.gz."""
    import gzip

    rows = [{"premise": "The Recipient shall return all materials.", "doc_id": 3}] * 2 + [{"premise": "Other NDA.",
                                                                                            "doc_id": 7}]
    with gzip.open(tmp_path / "dev.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "more.csv.gz", "wt") as handle:
        handle.write("premise,doc_id\nA csv row.,9\n")
    config = _input(files=[str(tmp_path / "*.gz")], context_col="premise", id_col="doc_id")
    assert [name for _, name in resolve_input_files(config)] == ["dev.jsonl.gz", "more.csv.gz"]
    documents = load_documents(config)
    assert [(d.source_id, d.text) for d in documents] == [
        ("3", rows[0]["premise"]), ("3", rows[0]["premise"]), ("7", "Other NDA."), ("9", "A csv row.")]
    assert len(load_documents(_input(files=[str(tmp_path / "dev.jsonl.gz")], context_col="premise",
                                      max_documents=2))) == 2
    (tmp_path / "broken.jsonl.gz").write_bytes(b"{not gzip}\n")
    with gzip.open(tmp_path / "empty.jsonl.gz", "wb"):
        pass
    for name, expected in (("broken.jsonl.gz", "not a complete gzip file"), ("empty.jsonl.gz", "is empty")):
        with pytest.raises(UserError, match=expected) as error:
            load_documents(_input(files=[str(tmp_path / name)], context_col="premise"))
        assert name in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"text"))
    with pytest.raises(UserError, match="unsupported type.*\\.jsonl\\.gz"):
        resolve_input_files(_input(files=[str(tmp_path / "notes.txt.gz")]))


def test_parquet_and_saved_dataset(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({"text": ["one", "two"], "label": [0, 1]})
    table.to_parquet(str(tmp_path / "data.parquet"))
    assert [d.text for d in load_documents(_input(files=[str(tmp_path / "data.parquet")]))] == ["one", "two"]
    datasets.DatasetDict({"train": table, "test": table.select([1])}).save_to_disk(str(tmp_path / "saved"))
    documents = load_documents(_input(dataset=str(tmp_path / "saved"), split="test"))
    assert [(d.source_id, d.text) for d in documents] == [("0", "two")]
    with pytest.raises(UserError, match="no split 'validation'.*train, test"):
        load_documents(_input(dataset=str(tmp_path / "saved"), split="validation"))


def test_missing_column_names_the_existing_ones(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x", "title": "y"}) + "\n")
    with pytest.raises(UserError) as error:
        load_documents(_input(files=[str(tmp_path / "d.jsonl")]))
    message = str(error.value)
    assert "context_col" in message and "'text'" in message and "body, title" in message and "\n" not in message


@pytest.mark.parametrize("name, content, expected", [
    ("empty.jsonl", b"", "is empty"),
    ("empty.md", b"  \n", "is empty"),
    ("binary.txt", b"\x00\x01\x02binary", "binary"),
    ("binary.jsonl", b"\x89PNG\x00\x00", "binary"),
    ("latin1.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
    ("broken.jsonl", b"{not json\n", "cannot parse"),
])
def test_bad_files_give_one_line_errors(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=expected) as error:
        load_documents(_input(files=[str(tmp_path / name)]))
    assert name in str(error.value) and "\n" not in str(error.value)


def test_nothing_matches(tmp_path):
    with pytest.raises(UserError, match="nothing matches"):
        resolve_input_files(_input(files=[str(tmp_path / "missing*.jsonl")]))
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(UserError, match="no .txt, .md, .pdf, .docx, .html, .htm documents"):
        resolve_input_files(_input(files=[str(tmp_path / "empty_folder")]))
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(UserError, match="unsupported type"):
        resolve_input_files(_input(files=[str(tmp_path / "table.xlsx")]))


def test_fingerprint_follows_file_content(tmp_path):
    (tmp_path / "a.txt").write_text("version one")
    config = _input(files=[str(tmp_path)])
    first = input_fingerprint(config)
    assert input_fingerprint(config) == first
    (tmp_path / "a.txt").write_text("version two")
    assert input_fingerprint(config) != first
    hub = input_fingerprint(_input(dataset="org/name", dataset_config="c", split="train"))
    assert hub["corpus_dataset"] == "org/name|c|train"
