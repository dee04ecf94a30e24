"""`recipes data inspect`: what each stage will train on, before a GPU hour is spent.

Counts (records, sequences, tokens, supervised tokens, truncated and dropped examples), length
percentiles, packing efficiency against padding each batch to its longest example, and a few
examples rendered with the trained tokens highlighted, so that a wrong template or mask is seen at a
glance. It goes through the same code as a run (recipes.data.prepare): it reads the token store,
preparing it first only if no run or `recipes prepare` did, and draws the examples at random.
"""

from __future__ import annotations

import random

from recipes.data.tokenization import IGNORE_INDEX


def inspect_stage(stage, tokenizer, count: int, say=lambda message: None, removed: bool = False) -> dict:
    """Read from the token store (prepared first if it is not yet): nothing prepared is tokenized again;
    ``count`` examples drawn at random (with the stage's seed) from the training set, or with
    ``removed``, up to ``count`` of what cleaning removed per source and reason."""
    from recipes.data.layout import example_lengths, examples_of
    from recipes.data.prepare import prepare

    s = stage.settings
    if not stage.language_modelling:
        return _inspect_own_kind(stage, tokenizer, count, say)
    data = prepare(stage, tokenizer, say)
    stats, store = data.stats, data.store
    train = examples_of(data.train)
    lengths = example_lengths(data.train)
    batch = s.per_device_train_batch_size
    picked = sorted(random.Random(s.seed).sample(range(len(train)), min(count, len(train))))
    out = {
        "stage": stage.name, "kind": stage.kind, "cutoff_len": s.cutoff_len, "cached": data.cached,
        "store": str(store.folder), "records": stats.records, "sequences": stats.examples, "tokens": stats.tokens,
        "supervised_tokens": stats.label_tokens, "truncated": stats.truncated, "dropped": stats.dropped,
        "bad_records": stats.bad, "bad_first": stats.bad_first, "mix": data.mix, "removed": stats.removed,
        "held_out": sum(len(examples_of(d)) for name, d in data.evals.items() if name.split("/")[0] == "val"),
        "length": {f"p{p}": int(v) for p, v in zip((50, 90, 99), _percentiles(lengths, (50, 90, 99)))}
        | {"max": int(lengths.max()) if len(lengths) else 0},
        "padded_efficiency": _padded_efficiency(lengths.tolist(), batch, s.seed),
        "packing": None,
        "examples": [] if removed else [segments(tokenizer, _example(train, i)) for i in picked],
    }
    if removed:
        out["removed_examples"] = {source.name: _per_reason(store.info.get("removed_examples", []), count)
                                   for source, store in zip(stage.sources, data.stores)}
    if data.packing is not None:
        out["packing"] = {"rows": data.packing.rows, "efficiency": data.packing.efficiency}
    return out


def _per_reason(examples: list[dict], count: int) -> list[dict]:
    """The first ``count`` examples of each reason."""
    taken: dict[str, int] = {}
    out = []
    for example in examples:
        if taken.get(example["reason"], 0) < count:
            taken[example["reason"]] = taken.get(example["reason"], 0) + 1
            out.append(example)
    return out


def removed_lines(removed: dict) -> list[str]:
    """What cleaning removed, a line per source that lost anything."""
    lines = []
    for source, reasons in removed.items():
        if reasons:
            parts = ", ".join(f"{reason} {c['documents']:,} ({c['tokens']:,} tokens)" for reason, c in sorted(reasons.items()))
            lines.append(f"removed by cleaning from {source}: {parts}")
    return lines


def _print_removed(examples: dict, console, width: int | None) -> None:
    from rich.markup import escape

    for source, found in examples.items():
        console.print(f"[bold]removed from {escape(source)}[/]: {len(found)} examples" if found
                      else f"nothing removed from {escape(source)}")
        for example in found:
            text = example["text"] if width is None else example["text"][:width]
            console.print(f"  [bold]{example['reason']}[/] {escape(example['place'] or '?')}: "
                          f"{escape(example['detail'])}")
            console.print(f"    [dim]{escape(text)}[/]", soft_wrap=True)


def _inspect_own_kind(stage, tokenizer, count: int, say) -> dict:
    """A stage kind with its own data (``StageKind.inspect``): its counts and examples, each example's
    parts (e.g. chosen and rejected) side by side with the trained tokens marked."""
    from recipes.data.prepare import kind_data
    from recipes.errors import RecipeError

    if stage.kind_provider.inspect is None:
        raise RecipeError(f"stage {stage.name!r}: the plugin of the {stage.kind!r} kind does not show its data")
    found = stage.kind_provider.inspect(kind_data(stage, tokenizer, say), count)
    return {"stage": stage.name, "kind": stage.kind, "cutoff_len": stage.settings.cutoff_len, "own_kind": True,
            "counts": found.get("counts", {}),
            "examples": [{part: segments(tokenizer, example) for part, example in parts.items()}
                         for parts in found.get("examples", [])]}


def _print_own_kind(r: dict, console, width: int | None) -> None:
    from rich.table import Table

    console.rule(f"{r['stage']} ({r['kind']}), cutoff_len {r['cutoff_len']}")
    console.print(", ".join(f"{key.replace('_', ' ')} {value:,}" if isinstance(value, int) else f"{key} {value}"
                            for key, value in r["counts"].items()), markup=False)
    for number, parts in enumerate(r["examples"], start=1):
        table = Table(title=f"example {number} (trained tokens in bold green)", show_lines=False, expand=True)
        for part in parts:
            table.add_column(part, ratio=1, overflow="fold")
        table.add_row(*(_marked(pieces, width) for pieces in parts.values()))
        console.print(table)


def _marked(pieces: list[dict], width: int | None) -> str:
    """An example's pieces as rich markup, trained ones bold green, clipped at ``width`` characters
    (None: whole)."""
    from rich.markup import escape

    shown, text = 0, ""
    whole = sum(len(piece["text"]) for piece in pieces)
    for piece in pieces:
        part = piece["text"] if width is None else piece["text"][: max(width - shown, 0)]
        shown += len(part)
        text += f"[bold green]{escape(part)}[/]" if piece["trained"] else f"[dim]{escape(part)}[/]"
    return text + (f" [dim]... ({whole - shown:,} more characters; --full shows them)[/]" if shown < whole else "")


def _example(examples, index: int) -> dict:
    ids, labels = examples.example(index)
    return {"input_ids": ids.tolist(), "labels": labels.tolist()}


def _percentiles(lengths, ps) -> list[int]:
    import numpy as np

    ordered = np.sort(lengths)
    return [_percentile(ordered, p) for p in ps]


def _percentile(values: list[int], p: int) -> int:
    return int(values[min(len(values) - 1, (len(values) * p) // 100)]) if len(values) else 0


def _padded_efficiency(lengths: list[int], batch: int, seed: int) -> float:
    """Real tokens / token slots when shuffled batches are padded to their longest example."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    slots = sum(max(order[i:i + batch]) * len(order[i:i + batch]) for i in range(0, len(order), batch))
    return sum(order) / slots if slots else 0.0


def segments(tokenizer, example: dict) -> list[dict]:
    """An example as text pieces, each marked trained (has labels) or not."""
    pieces: list[dict] = []
    run: list[int] = []
    trained = None
    for token, label in zip(example["input_ids"], example["labels"]):
        learn = label != IGNORE_INDEX
        if trained is not None and learn != trained:
            pieces.append({"text": tokenizer.decode(run), "trained": trained})
            run = []
        run.append(token)
        trained = learn
    if run:
        pieces.append({"text": tokenizer.decode(run), "trained": trained})
    return pieces


def print_inspection(report: dict, console, width: int | None = 1200) -> None:
    """The report as text; each example clipped at ``width`` characters (None: whole)."""
    r = report
    if r.get("own_kind"):
        return _print_own_kind(r, console, width)
    console.rule(f"{r['stage']} ({r['kind']}), cutoff_len {r['cutoff_len']}"
                 + (" - from the prepared store" if r["cached"] else ""))
    share = r["supervised_tokens"] / r["tokens"] if r["tokens"] else 0
    console.print(f"records {r['records']:,} -> sequences {r['sequences']:,} ({r['held_out']} held out for "
                  f"evaluation); tokens {r['tokens']:,}, supervised {r['supervised_tokens']:,} ({share:.0%}); "
                  f"truncated {r['truncated']}, dropped {r['dropped']}")
    for line in mix_lines(r.get("mix") or []) + removed_lines(r.get("removed") or {}):
        console.print(line, markup=False)
    length = r["length"]
    if r.get("bad_records"):
        console.print(f"bad records skipped: {r['bad_records']} (first: {'; '.join(r['bad_first'])})")
    console.print(f"length: p50 {length['p50']}, p90 {length['p90']}, p99 {length['p99']}, max {length['max']}")
    padded = f"padding each batch to its longest: {r['padded_efficiency']:.1%} of token slots hold real tokens"
    if r["packing"]:
        console.print(f"packing: {r['packing']['rows']} rows, {r['packing']['efficiency']:.1%} of token slots "
                      f"used (vs {padded})")
    else:
        console.print(padded)
    if "removed_examples" in r:
        _print_removed(r["removed_examples"], console, width)
    for number, pieces in enumerate(r["examples"], start=1):
        console.print(f"[bold]example {number}[/] ([bold green]trained[/], [dim]not trained[/]):")
        console.print(_marked(pieces, width), soft_wrap=True)


def mix_lines(mix: list[dict]) -> list[str]:
    """Per source of a stage with several (or a weight, or a cap): its training tokens and achieved share."""
    if not mix or (len(mix) == 1 and mix[0].get("weight") is None
                   and mix[0].get("kept_examples") == mix[0].get("available_examples")):
        return []
    lines = []
    for m in mix:
        used = m["tokens"] / m["offered_tokens"] if m.get("offered_tokens") else 0
        sampled = (f"{used:.2f}x its tokens (over-sampled)" if used > 1.0005 else
                   f"{used:.0%} of its tokens" + (" (under-sampled)" if used < 0.9995 else ""))
        weight = f", weight {m['weight']:g}" if m.get("weight") is not None else ""
        lines.append(f"source {m['name']}: {m['examples']:,} sequences, {m['tokens']:,} tokens, "
                     f"share {m['share']:.1%}{weight}; {sampled}")
    return lines
