"""7. The command line (click): each command parses, calls one function and prints (see common.py)."""

from recipes.cli import bundled, checking, data, importing, results, running  # noqa: F401  (they register)
from recipes.cli.common import main

__all__ = ["main"]
