"""Errors the user can fix. The CLI prints each as one line and exits with code 2."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located mistake: where it is and what to do about it."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [p for p in (where, self.field) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "field": self.field,
                "message": self.message}


class RecipeError(Exception):
    """Bad input: a recipe, a data file, a plugin. Carries one or more located problems."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TrainingError(Exception):
    """Training itself failed (not the user's input). The CLI exits with code 1."""


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C). The CLI prints how to resume and exits with code 130."""
