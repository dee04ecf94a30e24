"""The benchmarks in the run report: per benchmark, one row for the starting model and one after each
stage that scored it, with accuracy, its 95% interval, the item count, the share of each predicted
letter, and the change from the row before with McNemar's exact test on the same items; per-subject
accuracy in report.json; a PNG of the accuracies with their interval bars and the chance level.
Read from the stages' results (``stage.json``, the manifest); no torch.
"""

from __future__ import annotations

from pathlib import Path

from recipes.benchmarks.statistics import paired_change

START = "model"
IMAGE = "benchmarks.png"


def read_benchmarks(results: dict[str, dict]) -> list[dict] | None:
    """``results``: stage name -> its result, in plan order. Per benchmark: ``{"name", "chance",
    "rows": [{"after", accuracy, low, high, items, letters, subjects, "change"}]}``; None when no stage
    scored any. A change is only computed between rows scored on the same items."""
    rows: dict[str, list[tuple[str, dict]]] = {}
    for stage, result in results.items():
        scored = (result or {}).get("benchmarks") or {}
        for label, entries in ((START, scored.get("start")), (stage, scored.get("after"))):
            for name, entry in (entries or {}).items():
                if isinstance(entry, dict) and "accuracy" in entry:
                    rows.setdefault(name, []).append((label, entry))
    if not rows:
        return None
    out = []
    for name, entries in rows.items():
        table = []
        for position, (label, entry) in enumerate(entries):
            row = {"after": label, **{k: v for k, v in entry.items() if k != "per_item"}}
            if position:
                before_label, before = entries[position - 1]
                row["change_from"] = before_label
                if before.get("items_digest") != entry.get("items_digest"):
                    row["change"] = None  # other items (the benchmark changed between the rows): no pairing
                elif "per_item" in before and "per_item" in entry:
                    row["change"] = paired_change(before["per_item"]["correct"], entry["per_item"]["correct"])
            table.append(row)
        out.append({"name": name, "chance": entries[0][1].get("chance"), "rows": table})
    return out


def _label(after: str) -> str:
    return after if after == START else f"after {after}"


def _letters(row: dict) -> str:
    return " ".join(f"{letter} {share:.0%}" for letter, share in row.get("letters", {}).items() if share)


def _change(row: dict) -> str:
    if "change_from" not in row:
        return ""
    change = row.get("change")
    if change is None:
        return "not paired (other items)"
    verdict = "significant" if change["significant"] else "not significant"
    return f"{change['points']:+.1f} pts, p = {change['p']:.3g} ({verdict})"


def benchmark_cells(benchmark: dict) -> list[list[str]]:
    return [[_label(row["after"]), f"{row['accuracy']:.1%}", f"{row['low']:.1%}-{row['high']:.1%}",
             f"{row['items']:,}", _letters(row), _change(row)] for row in benchmark["rows"]]


HEADINGS = ("model", "accuracy", "95% CI", "items", "predicted letters", "change from the row before (McNemar exact)")


def benchmarks_markdown(benchmarks: list[dict] | None, image: str | None) -> list[str]:
    if not benchmarks:
        return []
    lines = ["", "## Benchmarks", "",
             "Multiple-choice accuracy on the starting model and after each stage, scored from the next-token "
             "logits of the answer letters after the same completion prompt. The interval is Wilson's 95% "
             "interval; the change is tested item by item against the row before (McNemar's exact test), so a "
             "change that is \"not significant\" may be noise. A model that answers one letter whatever the "
             "question shows it in the predicted letters."]
    for benchmark in benchmarks:
        lines += ["", f"### {benchmark['name']} (chance {benchmark['chance']:.1%})", "",
                  "| " + " | ".join(HEADINGS) + " |", "|---|" + "---|" * (len(HEADINGS) - 1)]
        lines += ["| " + " | ".join(cells) + " |" for cells in benchmark_cells(benchmark)]
        subjects = list(dict.fromkeys(s for row in benchmark["rows"] for s in row.get("subjects", {})))
        if len(subjects) > 1:
            lines += ["", "Per subject (accuracy, items):", "", "| model | " + " | ".join(subjects) + " |",
                      "|---|" + "---|" * len(subjects)]
            for row in benchmark["rows"]:
                per = row.get("subjects", {})
                lines.append(f"| {_label(row['after'])} | " + " | ".join(
                    f"{per[s]['accuracy']:.0%} ({per[s]['items']})" if s in per else "-" for s in subjects) + " |")
    if image:
        lines += ["", f"![benchmarks]({image})"]
    return lines


def benchmark_tables(benchmarks: list[dict]) -> list:
    from rich import box
    from rich.table import Table

    tables = []
    for benchmark in benchmarks:
        table = Table(title=f"benchmark {benchmark['name']} (chance {benchmark['chance']:.1%})", box=box.SIMPLE_HEAD,
                      pad_edge=False, padding=(0, 1, 0, 0))
        for index, heading in enumerate(HEADINGS):
            table.add_column(heading if index < 5 else "change (McNemar exact)",
                             justify="right" if index in (1, 3) else "left")
        for cells in benchmark_cells(benchmark):
            table.add_row(*cells)
        tables.append(table)
    return tables


def print_benchmarks(benchmarks: list[dict], console) -> None:
    """A table per benchmark on a terminal wide enough for it; otherwise (a pipe, a file, a narrow
    terminal) one plain line per row, as the evaluation matrix does."""
    for benchmark, table in zip(benchmarks, benchmark_tables(benchmarks)):
        if console.is_terminal and console.measure(table).maximum <= console.width:
            console.print(table)
            continue
        for cells in benchmark_cells(benchmark):
            console.print(f"benchmark {benchmark['name']} (chance {benchmark['chance']:.1%}), {cells[0]}: accuracy "
                          f"{cells[1]} (95% CI {cells[2]}, {cells[3]} items); answers {cells[4]}"
                          + (f"; change {cells[5]}" if cells[5] else ""), markup=False, soft_wrap=True)


def draw_benchmarks(benchmarks: list[dict], path: Path) -> Path:
    """Each benchmark's accuracy across the rows with its 95% interval as bars, and its chance level."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = list(dict.fromkeys(row["after"] for b in benchmarks for row in b["rows"]))
    figure, axes = pyplot.subplots(figsize=(max(5, 1.6 * len(labels) + 3), 3.8))
    width = 0.8 / len(benchmarks)
    for index, benchmark in enumerate(benchmarks):
        xs = [labels.index(row["after"]) + (index - (len(benchmarks) - 1) / 2) * width for row in benchmark["rows"]]
        ys = [100 * row["accuracy"] for row in benchmark["rows"]]
        errors = [[100 * (row["accuracy"] - row["low"]) for row in benchmark["rows"]],
                  [100 * (row["high"] - row["accuracy"]) for row in benchmark["rows"]]]
        line = axes.errorbar(xs, ys, yerr=errors, fmt="o-", capsize=4, label=benchmark["name"])
        axes.axhline(100 * benchmark["chance"], color=line[0].get_color(), linestyle=":", linewidth=1)
    axes.set_xticks(range(len(labels)), [_label(label) for label in labels])
    axes.set_ylim(0, 100)
    axes.set_ylabel("accuracy % (95% interval; dotted: chance)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
