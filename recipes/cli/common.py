"""What every command shares: the click group, the consoles, and ``friendly`` (our errors become one
line each, exit 2; training failures exit 1; Ctrl-C exits 130).

Exit codes: 0 done, 1 training failed, 2 bad input, 130 interrupted. torch and transformers are
imported only inside the commands that need them."""

from __future__ import annotations

import sys
from functools import wraps

import click

from recipes import __version__
from recipes.errors import Interrupted, RecipeError, TrainingError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def _fail(lines: list[str], code: int):
    from rich.markup import escape  # a message may hold brackets (pip install 'pkg[extra]'), never markup

    err = _console(stderr=True)
    for line in lines:
        err.print(f"[red]error:[/] {escape(str(line))}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def friendly(command):
    """Our errors become one line each (exit 2); training failures exit 1; Ctrl-C exits 130. A command
    asked for `--json` reports bad input as JSON on standard output instead, `{"ok": false, "errors":
    [...]}` with each problem's file, line, column, field and message, so that a program reading the
    output never has to parse an error line."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RecipeError as exc:
            if kwargs.get("as_json"):
                import json

                click.echo(json.dumps({"ok": False, "errors": [p.as_dict() for p in exc.problems]}, indent=2,
                                      ensure_ascii=False))
                sys.exit(2)
            _fail([str(p) for p in exc.problems], 2)
        except TrainingError as exc:
            _fail([str(exc)], 1)
        except Interrupted as exc:
            _console(stderr=True).print(f"interrupted: {exc}", highlight=False)
            sys.exit(130)
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted; run the same command again to continue (finished "
                                        "stages are kept, an interrupted one resumes from its last checkpoint)")
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recipes")
def main():
    """Run a whole Qwen domain-adaptation plan (continued pre-training, then SFT) from one recipe."""
