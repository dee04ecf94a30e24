"""One document file to Markdown text: markitdown's converter for its type, called directly (never
markitdown's guessing by content, which would hand a damaged PDF to another converter and train on
what that one made of it), and a quick look at the file that needs no converter (what `recipes
validate` runs). markitdown is imported only when a file is converted.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

from recipes.api import Problem, RecipeError, read_text_file

MARKITDOWN = "markitdown[docx,pdf,pptx,xlsx]==0.1.9"
# suffix -> (markitdown's converter, its extra, the modules the extra installs)
CONVERTERS = {
    ".pdf": ("PdfConverter", "pdf", ("pdfminer", "pdfplumber")),
    ".docx": ("DocxConverter", "docx", ("mammoth", "lxml")),
    ".pptx": ("PptxConverter", "pptx", ("pptx",)),
    ".xlsx": ("XlsxConverter", "xlsx", ("openpyxl", "pandas")),
    ".html": ("HtmlConverter", None, ()),
    ".htm": ("HtmlConverter", None, ()),
    ".epub": ("EpubConverter", None, ()),
}
PLAIN = (".md", ".markdown", ".txt")  # already text: read as UTF-8, no converter
SUFFIXES = tuple(CONVERTERS) + PLAIN
# the part a zip-based document cannot be without (a zip that lacks it is another kind of file)
ZIP_MEMBERS = {".docx": "word/document.xml", ".pptx": "ppt/presentation.xml", ".xlsx": "xl/workbook.xml",
               ".epub": "META-INF/container.xml"}
FIX = "re-export or copy it again, remove it, or set on_bad_record = \"skip\" (and max_bad_records) to skip such files"


class BadDocument(RecipeError):
    """A file that cannot become a document: a bad record (skipped under on_bad_record = "skip")."""

    def __init__(self, path: Path, message: str):
        super().__init__(Problem(message, file=str(path)))


def suffix_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RecipeError(Problem(f"the documents format reads {', '.join(SUFFIXES)}, not "
                                  f"{suffix or 'files without suffix'}: convert it to one of them or leave it out "
                                  "of the data", file=str(path)))
    return suffix


def check_setup(path: Path, suffix: str) -> None:
    """markitdown and the extra this type needs are installed (looked up, not imported)."""
    if suffix in PLAIN:
        return
    if importlib.util.find_spec("markitdown") is None:
        raise RecipeError(Problem(f"reading {suffix} files needs markitdown, not installed: pip install "
                                  f"'{MARKITDOWN}' (or pip install -e plugins/recipes-documents, which brings it)",
                                  file=str(path)))
    _, extra, modules = CONVERTERS[suffix]
    if extra and any(importlib.util.find_spec(module) is None for module in modules):
        raise RecipeError(Problem(f"reading {suffix} files needs markitdown's {extra} extra, not installed: pip "
                                  f"install '{MARKITDOWN}'", file=str(path)))


def look(path: Path, suffix: str) -> None:
    """What can be seen without converting: an empty file, a PDF cut short, a zip-based document whose zip
    is damaged or lacks its main part, Markdown that is not UTF-8. Raises ``BadDocument``."""
    size = path.stat().st_size
    if path.name.startswith("~$"):
        raise BadDocument(path, "an Office owner file (Word, PowerPoint and Excel write ~$NAME beside a document "
                                "open in them), not a document: close the document and remove this file, or set "
                                "on_bad_record = \"skip\" (and max_bad_records) to skip such files")
    if size == 0:
        raise BadDocument(path, f"an empty file: {FIX}")
    if suffix == ".pdf":
        with open(path, "rb") as handle:
            head = handle.read(1024)
            handle.seek(max(0, size - 2048))
            tail = handle.read()
        if b"%PDF-" not in head:
            raise BadDocument(path, f"not a PDF (no %PDF- header): {FIX}")
        if b"%%EOF" not in tail:
            raise BadDocument(path, f"a PDF cut short (no %%EOF at its end: an interrupted download or copy?): {FIX}")
    elif suffix in ZIP_MEMBERS:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise BadDocument(path, f"not a readable {suffix} file (its zip is damaged or cut short: {exc}): "
                                    f"{FIX}") from exc
        if ZIP_MEMBERS[suffix] not in names:
            raise BadDocument(path, f"not a {suffix} file (a zip without {ZIP_MEMBERS[suffix]}): {FIX}")
    elif suffix in PLAIN:
        try:
            read_text_file(path)
        except RecipeError as exc:
            raise BadDocument(path, f"{exc.problems[0].message}") from exc


_converters: dict = {}  # converter name -> instance, made once per process


def to_markdown(path: Path, suffix: str) -> str:
    """The document's text as Markdown, tidied; ``BadDocument`` when its converter fails on it."""
    if suffix in PLAIN:
        return tidy(read_text_file(path))
    name = CONVERTERS[suffix][0]
    try:
        from markitdown import MissingDependencyException, StreamInfo, converters
    except ImportError as exc:  # installed but broken: name what to reinstall
        raise RecipeError(Problem(f"markitdown cannot be imported ({exc}): pip install '{MARKITDOWN}'",
                                  file=str(path))) from exc
    if name not in _converters:
        _converters[name] = getattr(converters, name)()
    info = StreamInfo(extension=suffix, filename=path.name, local_path=str(path))
    try:
        with open(path, "rb") as stream:
            result = _converters[name].convert(stream, info)
    except MissingDependencyException as exc:
        raise RecipeError(Problem(f"reading {suffix} files needs markitdown's {CONVERTERS[suffix][1]} extra: pip "
                                  f"install '{MARKITDOWN}'", file=str(path))) from exc
    except Exception as exc:  # the converters raise what their libraries raise (pdfminer, mammoth, zipfile...)
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise BadDocument(path, f"markitdown could not convert it ({type(exc).__name__}: {detail}): {FIX}") from exc
    return tidy(result.markdown)


def tidy(text: str) -> str:
    """Page breaks as blank lines, lines that are only an HTML comment (markitdown's slide numbers)
    dropped, trailing blanks and runs of blank lines removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    lines = [line.rstrip() for line in text.split("\n") if not re.fullmatch(r"\s*<!--.*?-->\s*", line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
