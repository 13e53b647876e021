"""PDF, DOCX and HTML documents as text, with their structure kept for chunking (extra `[docs]`).

Page, paragraph and block boundaries become blank lines, the corpus splitter's coarsest boundary, so a
passage does not straddle two pages or sections unless one alone is longer than a passage. Files
that hold no text give one line naming the cause: an encrypted PDF, a scanned PDF without a text
layer, an empty document.

- PDF: `pypdf` (`PdfReader(...).pages[i].extract_text()`), pages joined by blank lines.
- DOCX: `python-docx`, one paragraph (headings included) per block, tables row by row.
- HTML: `beautifulsoup4` with the standard-library parser; scripts, styles and navigation dropped, one
  block per paragraph, heading, list item or table row.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError, missing_extra

__all__ = ["RICH_DOCUMENT_SUFFIXES", "read_rich_document"]

RICH_DOCUMENT_SUFFIXES = (".pdf", ".docx", ".html", ".htm")
_FIELD = "generate.input.files"


def _blocks(parts) -> str:
    cleaned = [re.sub(r"[ \t]+", " ", part).strip() for part in parts]
    return "\n\n".join(part for part in cleaned if part)


def _read_pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise missing_extra("pypdf", "docs") from None
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise UserError(f"{_FIELD}: {str(path)!r} is an encrypted PDF; decrypt it (e.g. `qpdf --decrypt`) "
                            "or remove it from the input")
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as error:
        raise UserError(f"{_FIELD}: {str(path)!r} cannot be read as a PDF ({str(error)[:160]}); fix or remove "
                        "it") from None
    text = _blocks(pages)
    if not text:
        raise UserError(f"{_FIELD}: {str(path)!r} has no text layer ({len(pages)} pages; a scanned PDF?); "
                        "OCR it first (e.g. `ocrmypdf`) or remove it")
    return text


def _read_docx(path: Path) -> str:
    try:
        import docx
        from docx.opc.exceptions import PackageNotFoundError
    except ImportError:
        raise missing_extra("python-docx", "docs") from None
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError) as error:
        raise UserError(f"{_FIELD}: {str(path)!r} cannot be read as a .docx file ({str(error)[:160]}); "
                        "save it again as .docx or remove it") from None
    parts = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        parts += [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
    return _blocks(parts)


def _read_html(path: Path) -> str:
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        raise missing_extra("beautifulsoup4", "docs") from None
    raw = path.read_bytes()
    soup = BeautifulSoup(raw, "html.parser")
    for element in soup(["script", "style", "noscript", "nav", "header", "footer", "template"]):
        element.decompose()
    body = soup.body or soup
    blocks = body.find_all(["p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "pre", "blockquote", "dd", "dt"])
    parts = [block.get_text(" ", strip=True) for block in blocks
             if not block.find_parent(["p", "li", "tr", "pre", "blockquote"])]  # nested blocks once
    return _blocks(parts) or _blocks([body.get_text("\n", strip=True)])


def read_rich_document(path: Path) -> str:
    """The text of one PDF/DOCX/HTML file, blocks separated by blank lines; a UserError for no text."""
    suffix = path.suffix.lower()
    reader = {".pdf": _read_pdf, ".docx": _read_docx, ".html": _read_html, ".htm": _read_html}[suffix]
    if path.stat().st_size == 0:
        raise UserError(f"{_FIELD}: {str(path)!r} is empty; remove it or give it some text")
    text = reader(path)
    if not text.strip():
        raise UserError(f"{_FIELD}: {str(path)!r} holds no text; remove it or give it some text")
    return text
