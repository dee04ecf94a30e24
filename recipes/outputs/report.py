"""The run report: per stage the steps, tokens, wall time (from the stage's start to its outputs
published: the run's "done in X s"), tokens/s (of training alone: ``train_seconds``), final train loss,
eval perplexity before and after, what merging a QLoRA adapter into the unquantized base changed in
the held-out loss, and peak memory (the stage's own); loss (and eval) curves as PNG
images. Written into <run>/report/ when a run ends, and again by `recipes report RUN`, from what the
run folder holds:

- ``manifest.json``: each stage's status and, once done, its result (the same dict as
  ``stages/<name>/stage.json``);
- ``metrics.jsonl``: every logged row. A run appends to it, each run starting with a ``run_start``
  line; after a crash and a resume the same steps can appear twice, and a stage trained afresh
  starts again at step 1. For each stage the rows of a later run replace those of earlier runs from
  its first logged step on, and of two rows for the same step and kind the last is kept.

A value the run does not have (a stage still running, eval not configured) shows as "-".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from recipes.errors import RecipeError
from recipes.outputs.run_folder import stage_order

REPORT_DIR = "report"
MATRIX_IMAGE = "eval_matrix.png"
COLUMNS = (  # (key, heading)
    ("stage", "stage"), ("status", "status"), ("steps", "steps"), ("tokens", "tokens"),
    ("wall_seconds", "wall s"), ("tokens_per_second", "tokens/s"), ("final_loss", "final loss"),
    ("eval_perplexity_before", "eval ppl before"), ("eval_perplexity_after", "eval ppl after"),
    ("eval_loss_merged_change", "merged eval change"), ("peak_memory_bytes", "peak memory"),
)


def read_metrics(path: Path) -> dict[str, dict[str, list[dict]]]:
    """stage -> {"train": rows with "loss", "eval": rows with "eval_loss"}, each sorted by step,
    with re-logged steps resolved as the module docstring says. Unreadable lines (a crash in the
    middle of a write) are skipped."""
    runs: list[list[dict]] = [[]]
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            if row.get("event") == "run_start":
                runs.append([])
            elif isinstance(row.get("stage"), str) and isinstance(row.get("step"), int):
                runs[-1].append(_headline_eval(row))
    kept: dict[str, list[dict]] = {}
    for rows in runs:
        for stage in dict.fromkeys(r["stage"] for r in rows):
            new = [r for r in rows if r["stage"] == stage]
            first = min(r["step"] for r in new)
            kept[stage] = [r for r in kept.get(stage, []) if r["step"] < first] + new
    curves = {}
    for stage, rows in kept.items():
        latest = {}
        for row in rows:
            kind = "eval" if "eval_loss" in row else "train" if "loss" in row else None
            if kind:
                latest[(kind, row["step"])] = row
        curves[stage] = {kind: sorted((r for (k, _), r in latest.items() if k == kind), key=lambda r: r["step"])
                         for kind in ("train", "eval")}
    return curves


def _headline_eval(row: dict) -> dict:
    """With several evaluation sets the Trainer logs eval_<set>_loss: the stage's own sets by their
    short names, the matrix's other stages' as eval_<stage>/<set>_loss. The curve's eval_loss is the
    stage's held-out set ("val"), else its first own set; another stage's set never stands in."""
    if "eval_loss" not in row:
        stage = row.get("stage")
        losses = [k for k in row if k.startswith("eval_") and k.endswith("_loss")]
        own = [k for k in losses if "/" not in k or k.startswith(f"eval_{stage}/")]
        held_out = [k for k in ("eval_val_loss", f"eval_{stage}/val_loss") if k in row]
        if held_out or own:
            row = {**row, "eval_loss": row[(held_out or own)[0]]}
    return row


def _stage_order(run_dir: Path, manifest: dict, curves: dict) -> list[str]:
    names = [name for name, _, _ in stage_order(run_dir, manifest.get("stages", {}))]
    return list(dict.fromkeys([*names, *curves]))


def read_run(run_dir: Path) -> dict:
    """The report as plain data: ``{"run_dir", "stages": [row, ...], "curves": {stage: {...}}}``."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise RecipeError(f"{run_dir}: not a run folder (no manifest.json); give the folder `recipes run` printed")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecipeError(f"{manifest_path}: unreadable ({exc})") from None
    curves = read_metrics(run_dir / "metrics.jsonl")
    names = _stage_order(run_dir, manifest, curves)
    entries = {name: manifest.get("stages", {}).get(name) or {} for name in names}
    rows = [stage_row(run_dir, name, entries[name], curves.get(name, {})) for name in names]
    from recipes.run.samples import report_samples

    results = {name: stage_result(run_dir, name, entries[name]) for name in names}
    samples = report_samples(run_dir, results)
    from recipes.benchmarks.report import read_benchmarks
    from recipes.outputs.matrix import read_matrix, read_mixes

    return {"run_dir": str(run_dir.resolve()), "stages": rows, "samples": samples,
            "eval_matrix": read_matrix(results), "benchmarks": read_benchmarks(results), "mix": read_mixes(results),
            "preference": read_preference(results), "removed": read_removed(results),
            "curves": {name: {**{kind: [[r["step"], r["loss" if kind == "train" else "eval_loss"]] for r in rows]
                                 for kind, rows in c.items()}, **source_curves(c.get("train", []))}
                       for name, c in curves.items()}}


def read_removed(results: dict[str, dict]) -> dict:
    """Per stage that cleaned anything away: a line per source, its removals per reason."""
    from recipes.data.inspect import removed_lines

    found = {name: removed_lines((result.get("data") or {}).get("removed") or {}) for name, result in results.items()}
    return {name: lines for name, lines in found.items() if lines}


def read_preference(results: dict[str, dict]) -> list[dict]:
    """Per evaluation set of a stage whose own evaluation measures preferences (accuracy: how often the
    chosen answer's implicit reward beats the rejected one's; margin: their mean difference), the
    figures before and after the stage."""
    out = []
    for name, result in results.items():
        before, after = (result or {}).get("eval_before") or {}, (result or {}).get("eval_after") or {}
        for set_name in dict.fromkeys([*before, *after]):
            if "accuracy" in before.get(set_name, {}) or "accuracy" in after.get(set_name, {}):
                out.append({"stage": name, "set": set_name, "before": before.get(set_name), "after": after.get(set_name)})
    return out


def preference_lines(preference: list[dict]) -> list[str]:
    def shown(figures: dict | None, key: str, form: str) -> str:
        return format(figures[key], form) if figures and key in figures else "-"

    def counted(figures: dict | None) -> str:
        unit = "pairs" if figures and "pairs" in figures else "examples"
        return f"{shown(figures, unit, ',')} {unit}"

    return [f"{p['stage']} ({p['set']}, {counted(p['after'] or p['before'])}): preference accuracy "
            f"{shown(p['before'], 'accuracy', '.3f')} -> {shown(p['after'], 'accuracy', '.3f')}, reward margin "
            f"{shown(p['before'], 'margin', '+.4f')} -> {shown(p['after'], 'margin', '+.4f')}" for p in preference]


def source_curves(rows: list[dict]) -> dict:
    """``train/NAME``: the per-source training loss of a stage with several sources (``source_loss/NAME``)."""
    prefix = "source_loss/"  # recipes.training.channels.PREFIX (the report reads no torch module)
    names = dict.fromkeys(k[len(prefix):] for row in rows for k in row if k.startswith(prefix))
    return {f"train/{name}": [[r["step"], r[prefix + name]] for r in rows if prefix + name in r] for name in names}


def stage_result(run_dir: Path, name: str, entry: dict) -> dict:
    """A stage's result: the manifest's, else its stage.json, else {}."""
    result = entry.get("result")
    if result is None:
        try:
            result = json.loads((run_dir / "stages" / name / "stage.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result = {}
    return result if isinstance(result, dict) else {}


def stage_row(run_dir: Path, name: str, entry: dict, curves: dict) -> dict:
    """One stage's line of the report: from its result when it finished, else from its metrics."""
    result = stage_result(run_dir, name, entry)
    train = curves.get("train", [])
    last = train[-1] if train else {}
    tokens = result.get("tokens_seen", last.get("tokens"))
    seconds = result.get("train_seconds")  # trainer.train() alone: what tokens/s divides by
    if seconds is None and len(train) > 1:
        seconds = train[-1]["time"] - train[0]["time"]  # an unfinished stage: from its logged rows
    row = {
        "stage": name, "kind": result.get("kind"), "status": entry.get("status", "-" if not train else "running"),
        "steps": result.get("steps", last.get("step")), "tokens": tokens,
        "wall_seconds": result.get("wall_seconds", seconds if not result else None),  # the run's "done in X s"
        "tokens_per_second": tokens / seconds if tokens and seconds else None,
        "first_loss": result.get("first_loss", train[0]["loss"] if train else None),
        "final_loss": result.get("final_loss", last.get("loss")),
    }
    for key in ("eval_loss_before", "eval_loss_after", "eval_perplexity_before", "eval_perplexity_after",
                "peak_memory_bytes", "trainable_params", "total_params", "eval_loss_merged", "eval_loss_merged_change"):
        row[key] = result.get(key)
    for when in ("before", "after"):  # a perplexity the run only logged as a loss
        if row[f"eval_perplexity_{when}"] is None and isinstance(row[f"eval_loss_{when}"], (int, float)):
            row[f"eval_perplexity_{when}"] = math.exp(row[f"eval_loss_{when}"])
    return row


def cell(key: str, value) -> str:
    """A value as the table shows it; "-" when the run does not have it."""
    if value is None or value == "":
        return "-"
    if key == "peak_memory_bytes":
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
    if key == "eval_loss_merged_change":  # the merged model's held-out loss minus the quantized model's
        return f"{value:+.4f}"
    if key in ("steps", "tokens"):
        return f"{value:,}"
    if key in ("wall_seconds", "tokens_per_second"):
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if "loss" in key else f"{value:.2f}"
    return str(value)


def report_table(report: dict):
    from rich.table import Table

    from rich import box

    table = Table(title=f"run {report['run_dir']}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    rows = [[cell(key, row[key]) for key, _ in COLUMNS] for row in report["stages"]]
    for index, (key, heading) in enumerate(COLUMNS):  # headings wrap by word, values never wrap
        width = max([len(r[index]) for r in rows] + [len(word) for word in heading.split()])
        table.add_column(heading.replace(" ", "\n"), no_wrap=True, min_width=width,
                         justify="left" if key in ("stage", "status") else "right")
    for values in rows:
        table.add_row(*values)
    return table


def report_markdown(report: dict, images: list[str]) -> str:
    from recipes.benchmarks.report import IMAGE, benchmarks_markdown
    from recipes.outputs.handoff import handoff_markdown
    from recipes.outputs.matrix import matrix_markdown

    lines = [f"# Run report: {report['run_dir']}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(key, row[key]) for key, _ in COLUMNS) + " |" for row in report["stages"]]
    matrix_image = next((image for image in images if image == MATRIX_IMAGE), None)
    lines += [""] + [f"![{Path(image).stem}]({image})" for image in images if image not in (MATRIX_IMAGE, IMAGE)]
    if report.get("preference"):
        lines += ["", "## Preference", "", "On each preference stage's held-out pairs, before and after the stage: "
                  "the share of pairs whose chosen answer gets the higher implicit reward, and the mean reward "
                  "margin (chosen minus rejected).", ""]
        lines += [f"- {line}" for line in preference_lines(report["preference"])]
    if report.get("removed"):
        lines += ["", "## Cleaning", "", "What each stage's cleaning removed from its training data (documents and "
                  "their tokens, per reason; `recipes data inspect --removed` shows examples).", ""]
        lines += [f"- {stage}: {line}" for stage, found in report["removed"].items() for line in found]
    lines += matrix_markdown(report.get("eval_matrix"), report.get("mix") or {}, matrix_image)
    lines += benchmarks_markdown(report.get("benchmarks"), IMAGE if IMAGE in images else None)
    lines += samples_markdown(report.get("samples") or [])
    lines += handoff_markdown(report)
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    """Text in a markdown table cell: pipes escaped, line breaks shown as <br>."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\r", "\n")
    return "<br>".join(text.split("\n")) or "(nothing)"


def samples_markdown(samples: list[dict]) -> list[str]:
    """The report's samples section: per prompt, a table of the starting model's and each stage's answer."""
    if not samples:
        return []
    lines = ["", "## Samples", "",
             "The recipe's `samples`, answered greedily by the starting model (`model`) and by each stage's "
             "merged model: a pre-training stage continues a prompt as text, an SFT stage answers it as chat "
             "(and the starting model does both). \"(stopped)\": it ended at a stop token.", ""]
    for index, sample in enumerate(samples, 1):
        lines += [f"### {index}. {_md_cell(sample['prompt'])}", "", "| by | as | answer | new tokens |", "|---|---|---|---|"]
        lines += [f"| {a['by']} | {a.get('mode') or '-'} | {_md_cell(a['answer'])} | {cell('tokens', a.get('new_tokens'))}"
                  f"{' (stopped)' if a.get('stopped') == 'stop token' else ''} |" for a in sample["answers"]]
        lines.append("")
    return lines


def write_report(run_dir, console=None) -> Path:
    """Write <run>/report/ (report.json, report.md, loss.png, eval.png when eval rows exist) and, with
    a rich console, print the table. Returns the report folder. Called when a run ends and by
    `recipes report`."""
    from recipes.outputs.curves import draw_curves

    report = read_run(Path(run_dir))
    folder = Path(run_dir) / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    images = draw_curves(report["curves"], folder)
    if report.get("eval_matrix") and any("perplexity" in value for row in report["eval_matrix"]["rows"]
                                         for value in row["results"].values()):
        from recipes.outputs.matrix import draw_matrix

        images.append(draw_matrix(report["eval_matrix"], folder / MATRIX_IMAGE))
    if report.get("benchmarks"):
        from recipes.benchmarks.report import IMAGE, draw_benchmarks

        images.append(draw_benchmarks(report["benchmarks"], folder / IMAGE))
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(report_markdown(report, [p.name for p in images]), encoding="utf-8")
    if console is not None:
        console.print(report_table(report))
        if report.get("eval_matrix"):
            from recipes.outputs.matrix import print_matrix

            print_matrix(report["eval_matrix"], console)
        if report.get("benchmarks"):
            from recipes.benchmarks.report import print_benchmarks

            print_benchmarks(report["benchmarks"], console)
        for line in preference_lines(report.get("preference") or []):
            console.print(line, markup=False)
        for stage, lines in (report.get("removed") or {}).items():
            for line in lines:
                console.print(f"{stage}: {line}", markup=False)
        for stage, lines in (report.get("mix") or {}).items():
            console.print(f"data mix of {stage}:", markup=False)
            for line in lines:
                console.print(f"  {line}", markup=False)
        for sample in report["samples"]:
            console.print(f"sample {sample['prompt']!r}:", markup=False)
            for answer in sample["answers"]:
                text = repr(answer["answer"])
                console.print(f"  {answer['by']} ({answer.get('mode')}): {text if len(text) <= 100 else text[:97] + '...'}",
                              markup=False)
        console.print(f"report: {folder}" + "".join(f", {p.name}" for p in images))
    return folder
