"""PDF, DOCX and HTML inputs: the files are built here, read through the generate stage's corpus loader, with
page/paragraph boundaries kept as blank lines, and a one-line error for scanned, encrypted or empty files."""

from __future__ import annotations

import pytest

from bonito_adapt.errors import UserError
from bonito_adapt.generate.config import ChunkingConfig, InputConfig
from bonito_adapt.generate.corpus import load_documents, make_passages

pytest.importorskip("pypdf")
pytest.importorskip("docx")
pytest.importorskip("bs4")


def text_pdf(path, pages: list[str]):
    """A minimal PDF with one text line per page (Helvetica), written by hand, as any PDF writer would."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode().decode() + stream.decode() + "\nendstream")
        content = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    body, offsets = b"%PDF-1.4\n", []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += f"{number} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    body += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    body += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(body)
    return path


def test_pdf_docx_and_html_become_documents_with_their_blocks(tmp_path):
    import docx

    text_pdf(tmp_path / "policy.pdf", ["Refunds are paid within 14 days.", "Annual plans renew each year."])
    document = docx.Document()
    document.add_heading("Confidentiality", level=1)
    document.add_paragraph("The receiving party shall not disclose the information.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Term", "Three years"
    document.save(tmp_path / "nda.docx")
    (tmp_path / "faq.html").write_text(
        "<html><head><style>p {color: red}</style><script>var x = 1;</script></head><body><nav>Home | About</nav>"
        "<h1>Support</h1><p>Reset your password from the <b>account</b> page.</p><ul><li>Call us</li></ul>"
        "<footer>© Company</footer></body></html>")
    documents = {d.source_id: d.text for d in load_documents(InputConfig(files=[str(tmp_path)]))}
    assert documents == {
        "faq.html": "Support\n\nReset your password from the account page.\n\nCall us",
        "nda.docx": "Confidentiality\n\nThe receiving party shall not disclose the information.\n\nTerm | Three years",
        "policy.pdf": "Refunds are paid within 14 days.\n\nAnnual plans renew each year.",
    }
    # page boundaries are passage boundaries when both pages fit a passage each
    passages, _ = make_passages(load_documents(InputConfig(files=[str(tmp_path / "policy.pdf")])),
                                ChunkingConfig(max_tokens=16), 8, lambda text: len(text.split()))
    assert [p.text for p in passages] == ["Refunds are paid within 14 days.", "Annual plans renew each year."]


def test_scanned_encrypted_and_empty_files_are_one_line(tmp_path):
    from pypdf import PdfReader, PdfWriter

    text_pdf(tmp_path / "scan.pdf", ["", ""])
    writer = PdfWriter(clone_from=PdfReader(str(text_pdf(tmp_path / "plain.pdf", ["Secret terms."]))))
    writer.encrypt("password")
    with open(tmp_path / "locked.pdf", "wb") as handle:
        writer.write(handle)
    (tmp_path / "empty.docx").write_bytes(b"")
    (tmp_path / "broken.docx").write_bytes(b"not a zip file at all")
    (tmp_path / "blank.html").write_text("<html><body><script>x()</script></body></html>")
    cases = {"scan.pdf": r"has no text layer \(2 pages; a scanned PDF\?\); OCR it first",
             "locked.pdf": r"is an encrypted PDF; decrypt it",
             "empty.docx": r"is empty; remove it",
             "broken.docx": r"cannot be read as a .docx file",
             "blank.html": r"holds no text"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            load_documents(InputConfig(files=[str(tmp_path / name)]))
        assert "\n" not in str(caught.value) and name in str(caught.value)
