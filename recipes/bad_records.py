"""What happens to a malformed record: an error naming it (the default), or, under
``on_bad_record = "skip"``, skipped, counted and its place listed, up to ``max_bad_records``.

Readers and tokenizers call ``bad_record(error)``; the policy in force (a context variable set by the
preparation around its reading) decides. Outside a preparation every bad record is an error.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from recipes.errors import RecipeError

SHOWN = 5  # places listed in the stage log, `data inspect` and the report


@dataclass
class BadRecords:
    skip: bool = False
    limit: float = 0.0  # a count (1 or more) or a share of the records read (below 1)
    count: int = 0
    first: list = field(default_factory=list)

    def add(self, error: Exception | str) -> None:
        if not self.skip:
            raise error if isinstance(error, RecipeError) else RecipeError(str(error))
        self.count += 1
        if len(self.first) < SHOWN:
            self.first.append(str(error).splitlines()[0])
        if self.limit >= 1 and self.count > self.limit:
            raise RecipeError(f"more than max_bad_records = {self.limit:g} bad records (skipped so far: "
                              f"{self.count - 1}; the first: {self.first[0]}); fix the data or raise the limit")

    def check_share(self, records: int) -> None:
        """At the end: the share limit, against every record read (good and bad)."""
        if 0 < self.limit < 1 and records and self.count > self.limit * records:
            raise RecipeError(f"{self.count} of {records} records are bad ({self.count / records:.1%}), more than "
                              f"max_bad_records = {self.limit:g}; the first: {self.first[0]}")

    def describe(self) -> str:
        return f"{self.count} bad records skipped" + (f" (first: {'; '.join(self.first)})" if self.first else "")


_POLICY: ContextVar[BadRecords | None] = ContextVar("bad_record_policy", default=None)


def bad_record(error: Exception) -> None:
    """Raise ``error``, or count it as skipped, as the policy in force says."""
    policy = _POLICY.get()
    if policy is None:
        raise error
    policy.add(error)


def skipped() -> int:
    """How many bad records the policy in force has skipped so far (0 outside a preparation): a file
    that gave no record is empty unless some were skipped while reading it."""
    policy = _POLICY.get()
    return policy.count if policy is not None else 0


@contextmanager
def policy(bad: BadRecords):
    token = _POLICY.set(bad)
    try:
        yield bad
    finally:
        _POLICY.reset(token)
