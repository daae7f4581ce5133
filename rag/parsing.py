"""Turn one uploaded file into a Document, or explain plainly why not.

Uploads arrive as files on disk with a name and a mime type that the browser
*claimed*; neither is trusted. The real type comes from the bytes: PDF and DOCX
have signatures, known binary formats are refused, and everything else must
decode as text. The file name's extension is only used to tell text formats
apart (Markdown, CSV, HTML or plain text), never to accept a binary file.

The text keeps the structure the chunker relies on, Markdown `#` headings and
blank lines between paragraphs: Markdown stays as it is, HTML and DOCX headings
become `#` headings, PDF pages are separated by blank lines, and each CSV row
becomes one readable `header: value; ...` line.

Every failure is an `UploadError` whose `reason` can be shown to the user as is (an
`i18n.Message`: English as a str, said in the chat's language with `i18n.localise`);
no library exception escapes `parse_file`. Parsing is blocking: call it in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePath

import charset_normalizer
import docx
import pypdf
from bs4 import BeautifulSoup, Tag
from bs4.element import NavigableString, PreformattedString
from docx.table import Table
from docx.text.paragraph import Paragraph

from i18n import N_, Message
from rag.documents import Document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadError(Exception):
    file_name: str
    # Plain words for the user: what is wrong and, where useful, what to do (an i18n.Message).
    reason: str

    def __post_init__(self) -> None:
        # The dataclass __init__ skips Exception's: fill `args` so repr/logging show the details.
        Exception.__init__(self, self.file_name, self.reason)

    def __str__(self) -> str:
        # A Message (English as a str), so that the reason stays translatable where it is shown.
        # Translators: a file's name, then why it could not be read.
        return Message(N_("{file}: {reason}"), file=self.file_name, reason=self.reason)


# The explicit list for Chainlit's `accept` setting (mime type -> short label).
SUPPORTED_TYPES: dict[str, str] = {
    "text/plain": "Text",
    "text/markdown": "Markdown",
    "text/x-markdown": "Markdown",
    "text/html": "HTML",
    "text/csv": "CSV",
    # Windows labels .csv files as Excel; the content is sniffed, so a real
    # Excel file still gets a clear refusal.
    "application/vnd.ms-excel": "CSV",
    "text/tab-separated-values": "TSV",
    "application/pdf": "PDF",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Word (.docx)",
}

_MARKDOWN_EXTENSIONS = {".md", ".markdown", ".mdown", ".mkd"}
_CSV_EXTENSIONS = {".csv", ".tsv"}
_HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}


# Signatures of common binary formats, so they get a precise name in the error.
# ZIP is handled separately: DOCX is a ZIP.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", N_("PNG image")),
    (b"\xff\xd8\xff", N_("JPEG image")),
    (b"GIF87a", N_("GIF image")),
    (b"GIF89a", N_("GIF image")),
    (b"II*\x00", N_("TIFF image")),
    (b"MM\x00*", N_("TIFF image")),
    (b"\x00\x00\x01\x00", N_("icon")),
    (b"\x7fELF", N_("program (ELF)")),
    (b"\xca\xfe\xba\xbe", N_("program (Mach-O or Java class)")),
    (b"\xcf\xfa\xed\xfe", N_("program (Mach-O)")),
    (b"\x00asm", N_("WebAssembly module")),
    (b"\x1f\x8b", N_("gzip archive")),
    (b"\xfd7zXZ\x00", N_("xz archive")),
    (b"(\xb5/\xfd", N_("zstd archive")),
    (b"7z\xbc\xaf\x27\x1c", N_("7-Zip archive")),
    (b"Rar!\x1a\x07", N_("RAR archive")),
    (b"PK\x05\x06", N_("empty ZIP archive")),
    (b"SQLite format 3\x00", N_("SQLite database")),
    (b"ID3", N_("MP3 audio")),
    (b"OggS", N_("Ogg audio/video")),
    (b"fLaC", N_("FLAC audio")),
    (b"\x1aE\xdf\xa3", N_("Matroska/WebM video")),
    (b"wOFF", N_("web font")),
    (b"wOF2", N_("web font")),
    # Legacy Office (.doc/.xls/.ppt) are OLE2 compound files.
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", N_("legacy Office file (.doc/.xls/.ppt); save it as .docx or PDF")),
    (b"{\\rtf", N_("RTF document; save it as .docx or PDF")),
)

# What common non-DOCX ZIP-based formats are, told apart by a member they always contain.
_ZIP_KINDS: tuple[tuple[str, str], ...] = (
    ("xl/workbook.xml", N_("an Excel workbook; save the sheet as CSV and upload that")),
    ("ppt/presentation.xml", N_("a PowerPoint presentation; export it as PDF and upload that")),
    ("content.xml", N_("an OpenDocument file; save it as .docx or PDF and upload that")),
    ("META-INF/container.xml", N_("an EPUB e-book, which is not supported")),
)

# Decompressed size cap for DOCX: python-docx loads every part into memory, so a
# small "zip bomb" could otherwise exhaust it. Real documents stay far below.
_MAX_UNZIPPED_BYTES = 512 * 1024 * 1024

# Above this share of control characters, "text" is really binary data.
_MAX_CONTROL_SHARE = 0.05
# Control characters other than tab, newline and form feed, and the replacement character.
_UNWANTED_CONTROLS = re.compile("[\x00-\x08\x0b\x0d-\x1f\x7f-\x9f\ufffd]")


def parse_file(path: Path, file_name: str, max_bytes: int) -> Document:
    """Blocking (call it in a worker thread). Read, sniff, extract: a Document or UploadError."""
    name = safe_file_name(file_name)
    try:
        return _parse(Path(path), name, max_bytes)
    except UploadError:
        raise
    except Exception as exc:  # a library failing in a way not foreseen below
        log.warning("Unexpected failure parsing upload %r", name, exc_info=True)
        raise UploadError(name, Message(N_("the file could not be read; it may be damaged"))) from exc


def safe_file_name(name: str) -> str:
    """Neutralise a user-supplied file name for display and as a Document's `source`."""
    name = unicodedata.normalize("NFC", str(name or ""))
    # Drop control and format characters (including bidi overrides that disguise extensions).
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    # Final path component only, whichever separator the client's OS used.
    parts = [part for part in re.split(r"[\\/]", name) if part.strip()]
    name = parts[-1] if parts else ""
    name = re.sub(r"^[A-Za-z]:", "", name)  # "C:report.pdf"
    name = re.sub(r"\s+", " ", name).strip()
    if name.strip(".") == "":
        return "upload"
    if len(name) > 120:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 10:
            name = stem[: 120 - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:120].rstrip()
    return name or "upload"


def _parse(path: Path, name: str, max_bytes: int) -> Document:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UploadError(name, Message(N_("the uploaded file could not be found; upload it again"))) from exc
    if size > max_bytes:
        shown_size, shown_limit = _megabytes(size, max_bytes)
        raise UploadError(
            name, Message(N_("the file is {size} MB; the limit is {limit} MB"), size=shown_size, limit=shown_limit)
        )
    if size == 0:
        raise UploadError(name, Message(N_("the file is empty")))
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # +1: notice a file that grew since stat()
    except OSError as exc:
        raise UploadError(name, Message(N_("the uploaded file could not be read; upload it again"))) from exc
    if len(data) > max_bytes:
        shown_size, shown_limit = _megabytes(len(data), max_bytes)
        raise UploadError(
            name,
            Message(N_("the file is over {size} MB; the limit is {limit} MB"), size=shown_size, limit=shown_limit),
        )

    # The id is derived from the bytes, so the same file uploaded twice is recognisable.
    doc_id = "upload-" + hashlib.sha256(data).hexdigest()[:16]
    title, text = _extract(data, name)
    # `data` is dropped when this returns: only the extracted text lives on.
    return Document(id=doc_id, title=title, source=name, text=text)


def _extract(data: bytes, name: str) -> tuple[str, str]:
    """Return (title, text) for the file's real type."""
    extension = PurePath(name).suffix.lower()
    fallback_title = _clean_title(PurePath(name).stem) or name

    if data.startswith(b"%PDF-"):
        return _pdf(data, name, fallback_title)
    if data.startswith(b"PK\x03\x04"):
        return _zip_document(data, name, fallback_title)
    # A name promising PDF/DOCX on content that is neither: say so rather than read it as text.
    if extension == ".pdf":
        raise UploadError(name, Message(N_("the PDF is damaged or not a PDF")))
    if extension == ".docx":
        raise UploadError(name, Message(N_("the Word document is damaged or not a .docx file")))
    for signature, kind in _BINARY_SIGNATURES:
        if data.startswith(signature):
            raise UploadError(
                name, Message(N_("not a text document: it looks like a binary file ({kind})"), kind=Message(kind))
            )

    text = _decode_text(data, name)
    if not text.strip():
        raise UploadError(name, Message(N_("the file is empty (it contains only whitespace)")))

    if extension in _MARKDOWN_EXTENSIONS:
        return _markdown_title(text) or fallback_title, text.strip("\n")
    if extension in _CSV_EXTENSIONS:
        return fallback_title, _csv_text(text, name)
    if extension in _HTML_EXTENSIONS or (extension not in {".txt", ".text"} and _looks_like_html(text)):
        return _html(text, name, fallback_title)
    return fallback_title, text.strip("\n")


# --- text decoding ---------------------------------------------------------------------------


def _decode_text(data: bytes, name: str) -> str:
    # Byte-order marks are unambiguous; UTF-32 first, as its little-endian BOM starts like UTF-16's.
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise UploadError(
                    name, Message(N_("the text is not valid {encoding}; save it as UTF-8"), encoding=encoding.upper())
                ) from exc
            return _clean_text(text, name)

    if b"\x00" in data:  # text without a BOM never contains NUL bytes; binary files almost always do
        raise UploadError(name, Message(N_("not a text document: it looks like a binary file")))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _guess_legacy_encoding(data, name)
    return _clean_text(text, name)


def _guess_legacy_encoding(data: bytes, name: str) -> str:
    """Decode non-UTF-8 text with charset-normalizer, biased towards Windows-1252.

    On short texts charset-normalizer finds many single-byte code pages equally
    clean and picks one almost arbitrarily ("café" came back as cp1006, Urdu).
    Windows-1252 is by far the most common legacy encoding of documents, so among
    candidates nearly as clean as the best one, prefer one that decodes like it.
    """
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        raise UploadError(
            name,
            Message(
                N_(
                    "not a text document: it looks like a binary file, or text in an encoding "
                    "that could not be recognised (save it as UTF-8)"
                )
            ),
        )
    best_chaos = min(match.chaos for match in matches)
    western = [
        match
        for match in matches
        if match.chaos <= best_chaos + 0.15 and ("cp1252" in match.could_be_from_charset or match.encoding == "cp1252")
    ]
    chosen = western[0] if western else matches[0]
    return str(chosen)


def _clean_text(text: str, name: str) -> str:
    """Normalise newlines; refuse 'text' that is mostly control characters; drop stray ones."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    cleaned, controls = _UNWANTED_CONTROLS.subn("", text)
    if text and controls / len(text) > _MAX_CONTROL_SHARE:
        raise UploadError(name, Message(N_("not a text document: it looks like a binary file")))
    return cleaned


# --- Markdown, CSV ---------------------------------------------------------------------------


def _markdown_title(text: str) -> str:
    """The first level-1 ATX heading outside code fences, or ''."""
    in_fence = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and line.startswith("# "):
            return _clean_title(re.sub(r"\s#+\s*$", "", line[2:]))
    return ""


def _csv_text(text: str, name: str) -> str:
    """One line per row, `header: value; header: value`, so each row reads as a fact."""
    sample = text[:65536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:  # e.g. a single column: nothing to sniff
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UploadError(name, Message(N_("the CSV file could not be read ({error})"), error=str(exc))) from exc
    if not rows:
        raise UploadError(name, Message(N_("the file is empty (it contains only whitespace)")))

    headers = [_collapse(cell) for cell in rows[0]]
    if len(rows) == 1:
        return "; ".join(header for header in headers if header)

    def header(index: int) -> str:
        return headers[index] if index < len(headers) and headers[index] else f"column {index + 1}"

    lines = []
    for row in rows[1:]:
        pairs = [f"{header(i)}: {_collapse(value)}" for i, value in enumerate(row) if value.strip()]
        lines.append("; ".join(pairs))
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_DROPPED_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")
# Elements that start a new paragraph; everything else is inline and joins the running text.
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr",
    "html", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul",
}  # fmt: skip


def _looks_like_html(text: str) -> bool:
    return re.match(r"\s*(<!doctype html|<html[\s>])", text[:1024], re.IGNORECASE) is not None


def _html(text: str, name: str, fallback_title: str) -> tuple[str, str]:
    soup = BeautifulSoup(text, "html.parser")
    title = _clean_title(soup.title.get_text(" ")) if soup.title else ""
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    body = _html_blocks(soup.body or soup)
    if not body:
        raise UploadError(
            name,
            Message(
                N_(
                    "the HTML page contains no text; export it again with selectable text (or run OCR on it) "
                    "and upload that"
                )
            ),
        )
    return title or fallback_title, body


def _html_blocks(root: Tag) -> str:
    """Walk the tree (iteratively: deep nesting must not hit the recursion limit) into paragraphs."""
    blocks: list[str] = []
    inline: list[str] = []

    def flush() -> None:
        lines = (_collapse(line) for line in "".join(inline).split("\n"))
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            blocks.append(paragraph)
        inline.clear()

    # Stack items: a node to visit, or None meaning "a block element ends here".
    stack: list[object] = list(reversed(root.contents))
    while stack:
        node = stack.pop()
        if node is None:
            flush()
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA
                # Line breaks in the source are just spaces; only <br> breaks a line.
                inline.append(re.sub(r"\s+", " ", str(node)))
        elif isinstance(node, Tag):
            tag = node.name.lower()
            if tag in _HEADING_TAGS:
                flush()
                heading = _collapse(node.get_text(" "))
                if heading:
                    blocks.append("#" * _HEADING_TAGS[tag] + " " + heading)
            elif tag == "pre":  # keep preformatted line breaks as they are
                flush()
                preformatted = node.get_text().strip("\n")
                if preformatted.strip():
                    blocks.append(preformatted)
            elif tag == "br":
                inline.append("\n")
            elif tag in ("td", "th"):
                inline.append(" | " if inline and "".join(inline).strip() else "")
                stack.extend(reversed(node.contents))
            elif tag in _BLOCK_TAGS:
                flush()
                if tag == "li":
                    inline.append("- ")
                stack.append(None)
                stack.extend(reversed(node.contents))
            else:
                stack.extend(reversed(node.contents))
    flush()
    # A list item that only held a nested list leaves a bare "-".
    return "\n\n".join(block for block in blocks if block != "-")


# --- ZIP: DOCX (or a clear refusal) ----------------------------------------------------------


def _zip_document(data: bytes, name: str, fallback_title: str) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(name, Message(N_("the file is a damaged ZIP archive (or a damaged .docx)"))) from exc
    names = {member.filename for member in members}
    if "word/document.xml" not in names:
        for member, kind in _ZIP_KINDS:
            if member in names:
                raise UploadError(name, Message(N_("unsupported file type: it is {kind}"), kind=Message(kind)))
        raise UploadError(name, Message(N_("unsupported file type: it is a ZIP archive, not a document")))
    if sum(member.file_size for member in members) > _MAX_UNZIPPED_BYTES:
        raise UploadError(name, Message(N_("the Word document is too large once unpacked")))
    return _docx(data, name, fallback_title)


def _docx(data: bytes, name: str, fallback_title: str) -> tuple[str, str]:
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises assorted KeyError/XML/ValueError on broken parts
        raise UploadError(name, Message(N_("the Word document is damaged and could not be opened"))) from exc

    blocks: list[str] = []
    # iter_inner_content keeps paragraphs and tables in document order.
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.extend(_docx_table_rows(item))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _docx_heading_level(item)
        blocks.append("#" * level + " " + _collapse(text) if level else text)

    if not blocks:
        raise UploadError(
            name,
            Message(
                N_(
                    "the Word document contains no text; export it again with selectable text (or run OCR on "
                    "it) and upload that"
                )
            ),
        )
    try:
        title = _clean_title(document.core_properties.title or "")
    except Exception:  # noqa: BLE001 - broken metadata is not worth refusing the document for
        title = ""
    return title or fallback_title, "\n\n".join(blocks)


def _docx_heading_level(paragraph: Paragraph) -> int:
    """1-6 for 'Heading N' styles (the 'Title' style counts as 1), else 0."""
    try:
        style_name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError, AttributeError):  # a paragraph pointing at a missing style
        return 0
    if style_name.lower() == "title":
        return 1
    match = re.fullmatch(r"heading\s*(\d)", style_name.strip(), re.IGNORECASE)
    return min(int(match.group(1)), 6) if match and int(match.group(1)) > 0 else 0


def _docx_table_rows(table: Table) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = _collapse(cell.text)
            # Merged cells come back once per grid column they span: keep one copy.
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return rows


# --- PDF -------------------------------------------------------------------------------------


def _pdf(data: bytes, name: str, fallback_title: str) -> tuple[str, str]:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except Exception as exc:  # pypdf's errors for broken files are many and not all PdfReadError
        raise UploadError(name, Message(N_("the PDF is damaged or not a PDF"))) from exc

    if reader.is_encrypted:
        # Many "protected" PDFs only restrict printing/copying and open with an empty password.
        try:
            opened = reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
        except Exception as exc:  # an encryption scheme pypdf cannot handle
            raise UploadError(
                name,
                Message(
                    N_("the PDF is encrypted in a way this app cannot open; remove the protection and upload it again")
                ),
            ) from exc
        if not opened:
            raise UploadError(
                name, Message(N_("the PDF is password-protected; remove the password and upload it again"))
            )

    try:
        pages = reader.pages
        page_count = len(pages)
    except Exception as exc:
        raise UploadError(name, Message(N_("the PDF is damaged or not a PDF"))) from exc

    texts: list[str] = []
    failures = 0
    for index in range(page_count):
        # One bad page should not cost the rest of the document.
        try:
            text = pages[index].extract_text() or ""
        except Exception:  # noqa: BLE001 - counted: only a document with no readable page is refused
            failures += 1
            continue
        text = _UNWANTED_CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        if text.strip():
            texts.append(text.strip("\n"))

    if not texts:
        if page_count and failures == page_count:
            raise UploadError(name, Message(N_("the PDF is damaged or not a PDF")))
        raise UploadError(
            name,
            Message(
                N_(
                    "the PDF has no selectable text (it may be scanned images); export it again with selectable "
                    "text (or run OCR on it) and upload that"
                )
            ),
        )
    return _pdf_title(reader) or fallback_title, "\n\n".join(texts)


def _pdf_title(reader: pypdf.PdfReader) -> str:
    try:
        metadata = reader.metadata
        raw = metadata.title if metadata else None
    except Exception:  # noqa: BLE001 - broken metadata is not worth refusing the document for
        return ""
    title = _clean_title(str(raw or ""))
    # Word's PDF export often writes "Microsoft Word - report.docx" as the title.
    title = re.sub(r"^Microsoft (Word|PowerPoint|Excel) - ", "", title)
    if title.lower() in ("untitled", "untitled document"):
        return ""
    return title


# --- small helpers ---------------------------------------------------------------------------


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _clean_title(title: str) -> str:
    title = "".join(ch for ch in title if not unicodedata.category(ch).startswith("C"))
    return _collapse(title)[:200]


def _megabytes(size: int, limit: int) -> tuple[str, str]:
    """Both sizes in MB, with enough decimals that an over-limit size never reads as equal."""
    mb = 1024 * 1024
    for decimals in (1, 2, 3, 6):
        shown_size, shown_limit = f"{size / mb:.{decimals}f}", f"{limit / mb:.{decimals}f}"
        if shown_size != shown_limit and float(shown_limit) > 0:
            break
    return _trim_zeros(shown_size), _trim_zeros(shown_limit)


def _trim_zeros(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number
