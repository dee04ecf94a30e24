"""What the recipes-documents tests share (not a conftest.py: run beside the host's tests, a second
module named conftest would shadow theirs): private caches, and small documents of each type written
by the tests themselves (no binary file is checked in): HTML, Markdown, a DOCX and an EPUB built as the
zip files they are, a PDF written object by object, and a PPTX and an XLSX through python-pptx and
openpyxl (which markitdown's pptx and xlsx extras install)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest


@pytest.fixture(scope="module", autouse=True)
def caches(tmp_path_factory):
    """No network; the session's caches when the host's tests set them (the tiny model is built once),
    else private ones; all as they were afterwards."""
    root = tmp_path_factory.mktemp("documents_caches")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        for key, folder in (("HF_HOME", "hf"), ("RECIPES_CACHE", "recipes")):
            patch.setenv(key, os.environ.get(key) or str(root / folder))
        yield


def html(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    body = "".join(f"<h2>{escape(h)}</h2><p>{escape(t)}</p>" for h, t in sections)
    path.write_text(f"<!DOCTYPE html><html><head><title>{escape(title)}</title><style>p {{color: red}}</style>"
                    f"<script>var tracking = 1;</script></head><body><h1>{escape(title)}</h1>{body}</body></html>",
                    encoding="utf-8")
    return path


def markdown(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


_DOCX_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
<Override PartName="/word/styles.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/>
</Types>"""
_DOCX_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
 Target="word/document.xml"/>
</Relationships>"""
_DOCX_DOCUMENT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles"
 Target="styles.xml"/>
</Relationships>"""
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_STYLES = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="{_W}">
<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>
<w:style w:type="paragraph" w:styleId="Heading2"><w:name w:val="heading 2"/></w:style>
</w:styles>"""


def docx(path: Path, paragraphs: list[tuple[int, str]]) -> Path:
    """``paragraphs``: (heading level, text), level 0 for body text."""
    def paragraph(level: int, text: str) -> str:
        style = f'<w:pPr><w:pStyle w:val="Heading{level}"/></w:pPr>' if level else ""
        return f"<w:p>{style}<w:r><w:t xml:space=\"preserve\">{escape(text)}</w:t></w:r></w:p>"

    body = "".join(paragraph(level, text) for level, text in paragraphs)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        z.writestr("_rels/.rels", _DOCX_RELS)
        z.writestr("word/_rels/document.xml.rels", _DOCX_DOCUMENT_RELS)
        z.writestr("word/styles.xml", _DOCX_STYLES)
        z.writestr("word/document.xml", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                                        f'<w:document xmlns:w="{_W}"><w:body>{body}</w:body></w:document>')
    return path


def pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF with ``lines`` of Helvetica text (ASCII), its cross-reference table exact."""
    def literal(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({literal(line)}) Tj T*" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               "/Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


def epub(path: Path, title: str, chapters: list[tuple[str, str]]) -> Path:
    manifest = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
                       for i in range(len(chapters)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" '
                   'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
                   'full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("OEBPS/content.opf", f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
                   f'version="3.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><metadata><dc:title>{escape(title)}'
                   f'</dc:title></metadata><manifest>{manifest}</manifest><spine>{spine}</spine></package>')
        for i, (heading, text) in enumerate(chapters):
            z.writestr(f"OEBPS/c{i}.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
                       f'<h1>{escape(heading)}</h1><p>{escape(text)}</p></body></html>')
    return path


def pptx(path: Path, slides: list[tuple[str, str]]) -> Path:
    from pptx import Presentation

    deck = Presentation()
    for title, text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
        slide.shapes.title.text = title
        slide.placeholders[1].text = text
    deck.save(path)
    return path


def xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


# The four kinds a domain's documents mostly arrive in, with the text each must become
HIVES = [("Swarms", "Bees swarm in late spring."), ("蜂蜜", "一箱蜂一年产蜜十到三十公斤。")]
EXPECTED = {
    "guide.html": "# Beekeeping guide\n\n## Swarms\n\nBees swarm in late spring.\n\n## 蜂蜜\n\n一箱蜂一年产蜜十到三十公斤。",
    "rules.docx": "# Hive rules\n\nKeep the entrance clear.\n\n## Winter\n\nFeed sugar syrup in autumn.",
    "regulation.pdf": "Regulation 12 (hives)\nEvery hive must be registered.",
    "notes.md": "# Field notes\n\nThe north hive was calm.\n\n## May\n\nA swarm left the south hive.",
}


def corpus(folder: Path) -> dict[str, str]:
    """An HTML page, a DOCX, a PDF and a Markdown file in ``folder`` (the PDF one level down); the text
    each converts to, by file name."""
    (folder / "archive").mkdir(parents=True, exist_ok=True)
    html(folder / "guide.html", "Beekeeping guide", HIVES)
    docx(folder / "rules.docx", [(1, "Hive rules"), (0, "Keep the entrance clear."), (2, "Winter"),
                                 (0, "Feed sugar syrup in autumn.")])
    pdf(folder / "archive" / "regulation.pdf", ["Regulation 12 (hives)", "Every hive must be registered."])
    markdown(folder / "notes.md", "# Field notes\n\nThe north hive was calm.   \n\n\n\n## May\n\n"
                                  "<!-- draft -->\nA swarm left the south hive.\n")
    return dict(EXPECTED)
