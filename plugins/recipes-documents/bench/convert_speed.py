"""How fast the documents format turns each type of file into text, in one process (as `recipes
prepare` reads them: one file at a time, before the parallel tokenization).

    python plugins/recipes-documents/bench/convert_speed.py [--files 40] [--lines 45]

Writes ``--files`` documents of each type (PDF, DOCX, HTML, Markdown) with ``--lines`` lines of text
each (a PDF page holds 45 lines of this size) with the tests' own writers, reads each once to warm
up (imports, converter set-up), then reads them all through the registered format and prints, per
type: the files, the characters of text they became, the CPU seconds of this process (less
dependent on what else runs on a shared machine than the wall time, also printed) and the
characters per CPU second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import documents_support as make  # noqa: E402 (the tests' writers of each type)

from recipes_documents.plugin import register_data_formats  # noqa: E402 (the plugin's own provider)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--lines", type=int, default=45)
    args = parser.parse_args()
    lines = [f"Article {i}: every hive must be registered with the district office before the spring inspection."
             for i in range(args.lines)]
    writers = {
        "pdf": lambda path: make.pdf(path, lines),
        "docx": lambda path: make.docx(path, [(1, "Rules")] + [(0, line) for line in lines]),
        "html": lambda path: make.html(path, "Rules", [(f"Section {i}", line) for i, line in enumerate(lines)]),
        "md": lambda path: make.markdown(path, "# Rules\n\n" + "\n\n".join(lines)),
    }
    fmt = next(f for f in register_data_formats() if f.name == "documents")
    options = fmt.options_model()
    with tempfile.TemporaryDirectory() as folder:
        for kind, write in writers.items():
            paths = [write(Path(folder) / f"{kind}{i}.{kind}") for i in range(args.files)]
            list(fmt.read(paths[0], options))  # warm up
            cpu, wall = time.process_time(), time.perf_counter()
            chars = sum(len(record["text"]) for path in paths for record in fmt.read(path, options))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{kind:5} {args.files} files, {chars:,} characters: {cpu:.2f} CPU-s ({wall:.2f} s wall), "
                  f"{chars / max(cpu, 1e-9) / 1000:,.0f}k characters per CPU-second")


if __name__ == "__main__":
    main()
