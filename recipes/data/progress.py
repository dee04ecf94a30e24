"""The preparation's progress bar (records/s, tokens/s, ETA from the bytes read of the files on disk)
and its one-line summary. The bar goes to stderr and only to a terminal."""

from __future__ import annotations

import time

from recipes.data.streams import ByteCounter


class Progress:
    def __init__(self, total_bytes: int, label: str):
        self.records = self.tokens = 0
        self.started = time.monotonic()
        self.total_bytes = total_bytes
        self._first_byte = ByteCounter.total
        self._bar = None
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            if console.is_terminal:
                self._bar = Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TextColumn("{task.fields[rates]}"), TimeRemainingColumn(), console=console,
                                transient=True)
                self._task = self._bar.add_task(label, total=max(total_bytes, 1), rates="")
                self._bar.start()
        except ImportError:  # pragma: no cover - rich is a dependency
            self._bar = None

    def advance(self, records: int, tokens: int) -> None:
        self.records += records
        self.tokens += tokens
        if self._bar is not None:
            seconds = max(time.monotonic() - self.started, 1e-9)
            self._bar.update(self._task, completed=ByteCounter.total - self._first_byte,
                             rates=f"{self.records / seconds:,.0f} records/s, {self.tokens / seconds:,.0f} tokens/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, info: dict) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        reused = f", {info['reused_shards']} shards kept from an interrupted preparation" if info["reused_shards"] else ""
        unit = "documents" if info["kind"] == "documents" else "sequences"
        return (f"{info['records']:,} records -> {info['examples']:,} {unit}, {info['tokens']:,} tokens in "
                f"{seconds:.1f} s ({info['records'] / seconds:,.0f} records/s, {info['tokens'] / seconds:,.0f} "
                f"tokens/s, {_parallel(info)}{reused})")


def _parallel(info: dict) -> str:
    """How the tokenizing ran: processes, or one process with the tokenizer's own threads."""
    count = info["workers"]
    if info.get("threads"):
        return f"1 process, {count} tokenizer thread{'s' if count > 1 else ''}"
    return f"{count} process{'es' if count > 1 else ''}"
