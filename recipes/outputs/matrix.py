"""The plan's evaluation matrix in the report: every stage's evaluation sets (columns, ``STAGE/SET``)
on the starting model and after each stage (rows), as perplexity with its change from the first row;
a PNG with one line per set across the rows; and each stage's data mix (tokens and share per
source). Read from the stages' results (``stage.json``, the manifest).

How to read it: after a domain pre-training stage the domain sets' perplexity should fall; a general
set (replayed text, or an ``eval_data`` of general text) should hold within a few percent. If it
rises more, the stage forgets: raise the general source's ``weight``, lower the learning rate, or
train fewer steps.
"""

from __future__ import annotations

from pathlib import Path

START = "model"


def read_matrix(results: dict[str, dict]) -> dict | None:
    """``results``: stage name -> its result, in plan order. ``{"sets": [...], "rows": [{"after":
    label, "results": {set: {loss, perplexity, tokens}}}]}``, or None when no stage evaluated."""
    rows = []
    for name, result in results.items():
        matrix = (result or {}).get("eval_matrix") or {}
        if matrix.get("start") and not rows:
            rows.append({"after": START, "results": matrix["start"]})
        if matrix.get("before") and rows:  # a stage kind's own sets on the model it started from
            rows[-1] = {**rows[-1], "results": {**matrix["before"], **rows[-1]["results"]}}
        if matrix.get("after"):
            rows.append({"after": name, "results": matrix["after"]})
    if not rows:
        return None
    return {"sets": list(dict.fromkeys(s for row in rows for s in row["results"])), "rows": rows}


def read_mixes(results: dict[str, dict]) -> dict[str, list[str]]:
    """Per stage whose data is a mix (several sources, a weight or a cap): one line per source."""
    from recipes.data.inspect import mix_lines

    out = {name: mix_lines((result or {}).get("mix") or []) for name, result in results.items()}
    return {name: lines for name, lines in out.items() if lines}


def matrix_cells(matrix: dict) -> list[list[str]]:
    """Rows of text: the row's label, then per set its perplexity and its change from the first row
    that has the set."""
    first: dict[str, float] = {}
    table = []
    for row in matrix["rows"]:
        cells = [row["after"] if row["after"] == START else f"after {row['after']}"]
        for name in matrix["sets"]:
            value = row["results"].get(name)
            if value is None:
                cells.append("-")
                continue
            if "perplexity" not in value:  # a stage kind's own metrics (preference accuracy and margin)
                shown = {k: v for k, v in value.items() if k in ("accuracy", "margin")} or value
                cells.append(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
                continue
            ppl = value["perplexity"]
            base = first.setdefault(name, ppl)
            change = "" if base == ppl and row is matrix["rows"][0] else f" ({(ppl / base - 1):+.1%})"
            cells.append(f"{ppl:,.2f}{change}")
        table.append(cells)
    return table


def matrix_table(matrix: dict):
    from rich import box
    from rich.table import Table

    table = Table(title="evaluation matrix: perplexity (change from the first row)", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("model", no_wrap=True)
    for name in matrix["sets"]:
        table.add_column(name, justify="right", overflow="fold")
    for cells in matrix_cells(matrix):
        table.add_row(*cells)
    return table


def matrix_lines(matrix: dict) -> list[str]:
    """The matrix as plain lines, one per evaluation set (the sets as rows): readable in a pipe, a log
    file or a narrow terminal, where a table of one column per set would break every cell."""
    table = matrix_cells(matrix)
    labels = [cells[0] for cells in table]
    lines = ["evaluation matrix: perplexity (change from the first row)"]
    for column, name in enumerate(matrix["sets"], start=1):
        lines.append(f"  {name}: " + ", ".join(f"{label} {cells[column]}" for label, cells in zip(labels, table)))
    return lines


def print_matrix(matrix: dict, console) -> None:
    """A table on a terminal wide enough for it; otherwise (a pipe, a file, a narrow terminal) one plain
    line per set."""
    table = matrix_table(matrix)
    needed = console.measure(table).maximum
    if console.is_terminal and needed <= console.width:
        console.print(table)
        return
    for line in matrix_lines(matrix):
        console.print(line, markup=False, soft_wrap=True)


def matrix_markdown(matrix: dict | None, mixes: dict[str, list[str]], image: str | None) -> list[str]:
    lines = []
    if matrix:
        lines += ["", "## Evaluation matrix", "",
                  "Perplexity of every stage's evaluation sets on the starting model and after each stage (in "
                  "brackets: the change from the first row). A domain set's perplexity should fall; a general "
                  "set's should hold within a few percent, else the stage forgets (raise the general source's "
                  "`weight`, or lower the learning rate). A preference stage's own set shows its preference "
                  "accuracy and reward margin instead.", "",
                  "| model | " + " | ".join(matrix["sets"]) + " |", "|---|" + "---|" * len(matrix["sets"])]
        lines += ["| " + " | ".join(cells) + " |" for cells in matrix_cells(matrix)]
        if image:
            lines += ["", f"![evaluation matrix]({image})"]
    if mixes:
        lines += ["", "## Data mix", ""]
        for stage, mix in mixes.items():
            lines += [f"- {stage}: " + mix[0]] + [f"  {line}" for line in mix[1:]]
    return lines


def draw_matrix(matrix: dict, path: Path) -> Path:
    """Each set's perplexity across the rows (log scale), one line per set."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = [row["after"] for row in matrix["rows"]]
    figure, axes = pyplot.subplots(figsize=(max(5, 1.6 * len(labels) + 3), 3.8))
    for name in matrix["sets"]:
        points = [(i, row["results"][name]["perplexity"]) for i, row in enumerate(matrix["rows"])
                  if "perplexity" in row["results"].get(name, {})]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o", label=name)
    axes.set_xticks(range(len(labels)), [label if label == START else f"after {label}" for label in labels])
    axes.set_yscale("log")
    axes.set_ylabel("perplexity")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
