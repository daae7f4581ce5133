"""Uploaded files become Documents, on real files of each format; bad uploads get a clear reason."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pypdf
import pytest
from fpdf import FPDF

from rag.parsing import SUPPORTED_TYPES, UploadError, parse_file, safe_file_name

MAX_BYTES = 10 * 1024 * 1024
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


def write(tmp_path: Path, name: str, content: bytes | str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def parse(path: Path, max_bytes: int = MAX_BYTES):
    return parse_file(path, path.name, max_bytes)


def upload_error(path: Path, max_bytes: int = MAX_BYTES) -> UploadError:
    with pytest.raises(UploadError) as caught:
        parse(path, max_bytes)
    assert caught.value.file_name == path.name
    return caught.value


def pdf_bytes(*pages: str, title: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


# --- formats that parse ----------------------------------------------------------------------


def test_plain_text_is_read_as_is_with_the_file_name_as_title(tmp_path):
    path = write(tmp_path, "vpn-setup.txt", "Connect to vpn.example.com.\r\nUse your badge PIN.\r\n")

    document = parse(path)

    assert document.title == "vpn-setup"
    assert document.source == "vpn-setup.txt"
    assert document.text == "Connect to vpn.example.com.\nUse your badge PIN."
    assert document.id.startswith("upload-") and len(document.id) == len("upload-") + 16


def test_markdown_keeps_its_headings_and_takes_the_first_heading_as_title(tmp_path):
    text = "Intro line.\n\n# Release Process\n\n## Freeze\n\nFreeze on Monday.\n\n## Ship\n\nShip on Friday.\n"
    path = write(tmp_path, "release.md", text)

    document = parse(path)

    assert document.title == "Release Process"
    assert "## Freeze\n\nFreeze on Monday." in document.text
    assert "## Ship" in document.text


def test_html_headings_become_markdown_and_scripts_disappear(tmp_path):
    html = """<!DOCTYPE html><html><head><title>  On-call
      Guide </title><style>body { color: red }</style></head>
      <body><script>var secret = "tracking";</script>
      <h1>Paging</h1><p>Pages go to the
         primary first.</p>
      <h2>Escalation</h2><ul><li>Wait 15 minutes</li><li>Call the secondary</li></ul>
      <noscript>Enable JavaScript</noscript></body></html>"""
    path = write(tmp_path, "oncall.html", html)

    document = parse(path)

    assert document.title == "On-call Guide"
    assert "# Paging\n\nPages go to the primary first.\n\n## Escalation" in document.text
    assert "Wait 15 minutes\n\n" in document.text and "Call the secondary" in document.text
    assert "tracking" not in document.text
    assert "color" not in document.text
    assert "Enable JavaScript" not in document.text


def test_docx_headings_become_markdown_and_tables_are_included(tmp_path):
    word = docx.Document()
    word.core_properties.title = "Team Handbook"
    word.add_heading("Onboarding", level=1)
    word.add_paragraph("Welcome aboard.")
    word.add_heading("Equipment", level=2)
    table = word.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Item", "Owner"
    table.cell(1, 0).text, table.cell(1, 1).text = "Badge", "Security desk"
    path = tmp_path / "handbook.docx"
    word.save(path)

    document = parse(path)

    assert document.title == "Team Handbook"
    assert document.text.startswith("# Onboarding\n\nWelcome aboard.\n\n## Equipment")
    assert "Badge | Security desk" in document.text


def test_docx_without_a_core_title_is_titled_by_its_file_name(tmp_path):
    word = docx.Document()
    word.add_paragraph("Just a paragraph.")
    path = tmp_path / "notes 2024.docx"
    word.save(path)

    assert parse(path).title == "notes 2024"


def test_csv_rows_become_header_value_lines(tmp_path):
    path = write(tmp_path, "servers.csv", "host,owner,region\nalpha,Dana,eu-west\nbeta,Lee,\n")

    document = parse(path)

    assert document.title == "servers"
    assert document.text.split("\n") == [
        "host: alpha; owner: Dana; region: eu-west",
        "host: beta; owner: Lee",
    ]


def test_csv_with_semicolons_is_sniffed(tmp_path):
    path = write(tmp_path, "prices.csv", "item;price\ncoffee;2,50\ntea;1,80\n")

    assert parse(path).text == "item: coffee; price: 2,50\nitem: tea; price: 1,80"


def test_pdf_text_of_every_page_is_extracted_with_the_metadata_title(tmp_path):
    path = write(
        tmp_path, "report.pdf", pdf_bytes("Apples grew by ten percent.", "Pears fell sharply.", title="Q3 Report")
    )

    document = parse(path)

    assert document.title == "Q3 Report"
    assert document.text == "Apples grew by ten percent.\n\nPears fell sharply."


def test_pdf_without_a_metadata_title_is_titled_by_its_file_name(tmp_path):
    path = write(tmp_path, "minutes.pdf", pdf_bytes("We met."))

    assert parse(path).title == "minutes"


def test_pdf_protected_only_by_an_owner_password_is_read(tmp_path):
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes("Readable anyway."))))
    writer.encrypt("", owner_password="owner-only")
    path = tmp_path / "restricted.pdf"
    writer.write(path)

    assert parse(path).text == "Readable anyway."


@pytest.mark.parametrize(
    ("name", "text", "encoding", "expected"),
    [
        ("french.txt", "café déjà vu", "cp1252", "café déjà vu"),
        ("price.txt", "Price: 5€ – “quoted”", "cp1252", "Price: 5€ – “quoted”"),
        # Cyrillic in cp1251 must not be mistaken for cp1252.
        (
            "russian.txt",
            "Привет, как дела? Это тестовый документ.",
            "cp1251",
            "Привет, как дела? Это тестовый документ.",
        ),
        ("windows.txt", "Größe\r\nÜbermaß", "utf-16", "Größe\nÜbermaß"),
    ],
)
def test_text_in_other_encodings_is_decoded(tmp_path, name, text, encoding, expected):
    path = write(tmp_path, name, text, encoding=encoding)

    assert parse(path).text == expected


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path, "bom.md", "# Hello\n\nWorld", encoding="utf-8-sig")

    document = parse(path)

    assert document.title == "Hello"
    assert document.text == "# Hello\n\nWorld"


def test_the_same_bytes_give_the_same_id_whatever_the_name(tmp_path):
    first = write(tmp_path, "a.txt", "Same content.")
    second = write(tmp_path, "b.txt", "Same content.")
    other = write(tmp_path, "c.txt", "Other content.")

    assert parse(first).id == parse(second).id
    assert parse(first).id != parse(other).id


def test_source_is_the_sanitised_file_name(tmp_path):
    path = write(tmp_path, "upload.txt", "Hello.")

    document = parse_file(path, "../../secret/notes.txt", MAX_BYTES)

    assert document.source == "notes.txt"
    assert document.title == "notes"


# --- uploads that are refused ----------------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path):
    error = upload_error(write(tmp_path, "empty.txt", b""))

    assert "empty" in error.reason


def test_a_whitespace_only_file_is_refused_as_empty(tmp_path):
    error = upload_error(write(tmp_path, "blank.md", " \n\t\r\n  "))

    assert "empty" in error.reason


def test_a_png_named_as_text_is_refused_as_binary(tmp_path):
    error = upload_error(write(tmp_path, "notes.txt", PNG_BYTES))

    assert "binary" in error.reason and "PNG" in error.reason
    assert str(error) == f"notes.txt: {error.reason}"


def test_bytes_with_nul_characters_are_refused_as_binary(tmp_path):
    error = upload_error(write(tmp_path, "data.txt", b"abc\x00\x01\x02def" * 20))

    assert "binary" in error.reason


def test_a_corrupt_pdf_is_refused(tmp_path):
    error = upload_error(write(tmp_path, "broken.pdf", b"%PDF-1.4\n" + b"garbage \xff\xfe" * 100))

    assert "damaged or not a PDF" in error.reason


def test_a_text_file_named_pdf_is_refused(tmp_path):
    error = upload_error(write(tmp_path, "fake.pdf", "I am not a PDF."))

    assert "not a PDF" in error.reason


def test_a_password_protected_pdf_is_refused_with_what_to_do(tmp_path):
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes("Top secret."))))
    writer.encrypt("secret")
    path = tmp_path / "locked.pdf"
    writer.write(path)

    error = upload_error(path)

    assert "password-protected" in error.reason and "remove the password" in error.reason


def test_a_pdf_without_text_is_refused_with_advice(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 50, 30)
    path = write(tmp_path, "scan.pdf", bytes(pdf.output()))

    error = upload_error(path)

    assert "no selectable text" in error.reason and "export" in error.reason


def test_a_docx_without_text_is_refused(tmp_path):
    path = tmp_path / "blank.docx"
    docx.Document().save(path)

    error = upload_error(path)

    assert "no text" in error.reason


def test_an_html_page_without_text_is_refused(tmp_path):
    path = write(
        tmp_path, "app.html", "<html><head><title>App</title></head><body><script>run()</script></body></html>"
    )

    error = upload_error(path)

    assert "no text" in error.reason


def test_an_oversized_file_is_refused_before_reading_with_size_and_limit(tmp_path):
    path = write(tmp_path, "big.txt", "x" * 3 * 1024 * 1024)

    error = upload_error(path, max_bytes=2 * 1024 * 1024)

    assert error.reason == "the file is 3 MB; the limit is 2 MB"


def test_an_excel_workbook_is_refused_as_unsupported(tmp_path):
    path = tmp_path / "budget.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")

    error = upload_error(path)

    assert "unsupported" in error.reason and "Excel" in error.reason


def test_a_plain_zip_named_docx_is_refused(tmp_path):
    path = tmp_path / "report.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")

    error = upload_error(path)

    assert "unsupported" in error.reason


def test_a_damaged_docx_is_refused(tmp_path):
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<not really word")

    error = upload_error(path)

    assert "damaged" in error.reason


def test_a_missing_file_is_refused_not_crashed(tmp_path):
    with pytest.raises(UploadError) as caught:
        parse_file(tmp_path / "gone.txt", "gone.txt", MAX_BYTES)

    assert "upload it again" in caught.value.reason


# --- file names ------------------------------------------------------------------------------


def test_path_traversal_keeps_only_the_final_component():
    assert safe_file_name("../../etc/passwd") == "passwd"


def test_windows_paths_keep_only_the_file_name():
    assert safe_file_name("C:\\Users\\x\\report.pdf") == "report.pdf"


def test_control_characters_are_removed_and_whitespace_collapsed():
    assert safe_file_name("bad\x00\x1b[31mname\n  \t here.txt") == "bad[31mname here.txt"


def test_a_right_to_left_override_cannot_disguise_the_extension():
    assert safe_file_name("invoice\u202etxt.exe") == "invoicetxt.exe"


def test_long_names_are_capped_at_120_characters_keeping_the_extension():
    name = safe_file_name("a" * 500 + ".md")

    assert len(name) == 120
    assert name.endswith("aaa.md")


def test_empty_or_dot_only_names_become_upload():
    assert safe_file_name("") == "upload"
    assert safe_file_name("   ") == "upload"
    assert safe_file_name("../..") == "upload"


def test_supported_types_list_each_accepted_mime_type():
    assert {"text/plain", "text/markdown", "application/pdf", "text/html", "text/csv"} <= set(SUPPORTED_TYPES)
    assert "application/vnd.openxmlformats-officedocument.wordprocessingml.document" in SUPPORTED_TYPES
