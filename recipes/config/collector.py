"""Problems gathered while checking one recipe file, each placed at its TOML line and column."""

from __future__ import annotations

from pathlib import Path

from recipes.errors import Problem
from recipes.config.toml_lines import position_of


def dotted(path: tuple) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


class Collector:
    """Errors and warnings about one file; ``lines`` maps field paths to (line, column)."""

    def __init__(self, file: Path, lines: dict):
        self.file, self.lines = str(file), lines
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def _at(self, path: tuple, message: str) -> Problem:
        line, column = position_of(self.lines, path)
        return Problem(message, self.file, line, dotted(path) or None, column)

    def add(self, path: tuple, message: str) -> None:
        self._once(self.problems, self._at(path, message))

    def warn(self, path: tuple, message: str) -> None:
        self._once(self.warnings, self._at(path, message))

    @staticmethod
    def _once(found: list[Problem], problem: Problem) -> None:
        """A mistake in [defaults] is checked once per stage but reported once."""
        if problem not in found:
            found.append(problem)

    @staticmethod
    def in_order(problems: list[Problem]) -> list[Problem]:
        return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
