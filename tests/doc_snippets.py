"""Checks of the snippets a reader copies from the documentation (README.md and docs/): each TOML block
and each `recipes ...` command. Used by tests/test_doc_snippets.py, on the real pages and on a broken
fixture that shows each check can fail.

A TOML block is a whole recipe unless the line above its fence marks it:

- ``<!-- snippet: fragment -->``: part of a recipe (a `[[stages.data]]`, a `[distributed]` table...):
  it must parse, and every key in it must be one the recipe's JSON Schema knows at that place
  (the installed plugins' options included);
- ``<!-- snippet: not-a-recipe -->``: TOML of another tool (pyproject.toml, .taplo.toml): it must parse.

A whole recipe must pass `recipes validate` (errors fail; warnings are allowed), written to a folder of
its own, so its relative data paths must be `bundled:` ones or absolute.

A command is `recipes ...` at a command's place in a code block (line start, after `&&`, `|`, `;`,
`$ `, `-m `, `bin/`, `time ` or VAR=value) or an inline code span that starts with one; it must name
commands that exist in click's command tree, with options each command has. Usage notation in spans
(`[--merged|--adapter]`, `RECIPE...`) is read as the options it names.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

FRAGMENT = "fragment"
NOT_A_RECIPE = "not-a-recipe"
MARK = re.compile(r"^\s*<!-- snippet: ([\w-]+) -->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
COMMAND_AT = re.compile(r"(?:^|&&|\|\||[;|]|\$ |-m |bin/|\btime )\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*recipes\s+(?=\S)")
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}  # not "text": printed output


@dataclass
class Block:
    file: Path
    line: int  # of the first line inside the fence
    lang: str
    text: str
    mark: str | None


def code_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        indent, fence, lang = opened.groups()
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marked = MARK.match(previous)
        first = index + 2  # the 1-based number of the line after the fence
        body, index = [], index + 1
        while index < len(lines) and not lines[index].strip().startswith(fence[:3]):
            body.append(lines[index][len(indent):] if lines[index].startswith(indent) else lines[index])
            index += 1
        blocks.append(Block(path, first, lang.lower(), "\n".join(body) + "\n",
                            marked.group(1) if marked else None))
        index += 1
    return blocks


def prose_spans(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each inline code span outside the fenced blocks."""
    spans, in_fence = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opened = FENCE.match(line)
        if opened and (in_fence is None or line.strip().startswith(in_fence)):
            in_fence = None if in_fence else opened.group(2)[:3]
            continue
        if in_fence is None:
            spans += [(number, span) for span in re.findall(r"`([^`]+)`", line)]
    return spans


# --- TOML ---------------------------------------------------------------------------------------

def check_toml(block: Block, registry, schema: dict, workdir: Path) -> list[str]:
    where = f"{block.file.name}:{block.line}"
    if block.mark not in (None, FRAGMENT, NOT_A_RECIPE):
        return [f"{where}: unknown snippet mark {block.mark!r}; use {FRAGMENT!r} or {NOT_A_RECIPE!r}"]
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{where}: not TOML: {exc}"]
    if block.mark == NOT_A_RECIPE:
        return []
    if block.mark == FRAGMENT:
        return [f"{block.file.name}:{_key_line(block, key)}: {problem}"
                for key, problem in unknown_keys(data, schema, schema, "")]
    from recipes.config.load import check_recipe

    folder = workdir / f"{block.file.stem}-{block.line}"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.toml"
    recipe.write_text(block.text, encoding="utf-8")
    checked = check_recipe(str(recipe), registry, preflight=True)
    # a problem's line is the block's line plus the recipe's own
    return [f"{block.file.name}:{block.line + (p.line or 1) - 1}: {p.field or ''}: {p.message}" for p in checked.problems]


def unknown_keys(value, node: dict, schema: dict, path: str) -> list[str]:
    """(key, problem) for each key of a recipe fragment that the schema does not know where it stands."""
    node = _deref(node, schema)
    if isinstance(value, list):
        items = _branch(node, "array", schema).get("items", {})
        return [p for index, item in enumerate(value) for p in unknown_keys(item, items, schema, f"{path}[{index}]")]
    if not isinstance(value, dict):
        return []
    if _branch(node, "array", schema).get("type") == "array":
        # `[[stages.data]]` without a `[[stages]]` above it: the fragment's table is one of the stages
        return unknown_keys([value], node, schema, path)
    node = _branch(node, "object", schema)
    properties = dict(node.get("properties", {}))
    closed = node.get("additionalProperties") is False
    for rule in node.get("allOf", []):  # a plugin's options, chosen by `backend`, `format` or `loss`
        [(switch, cond)] = rule["if"]["properties"].items()
        if value.get(switch) == cond["const"]:
            then = rule["then"]
            properties.update(then.get("properties", {}))
            closed = closed or then.get("additionalProperties") is False
    problems = []
    for key, item in value.items():
        dotted = f"{path}.{key}" if path else key
        if key in properties:
            problems += unknown_keys(item, properties[key], schema, dotted)
        elif closed:
            problems.append((key, f"{dotted}: unknown key {key!r} (known here: {', '.join(sorted(properties))})"))
    return problems


def _key_line(block: Block, key: str) -> int:
    """The page line where a fragment writes `key = ...` (the block's first line if not found)."""
    for offset, line in enumerate(block.text.splitlines()):
        if re.search(rf"(^|[{{,\s]){re.escape(key)}\s*=", line):
            return block.line + offset
    return block.line


def _deref(node: dict, schema: dict) -> dict:
    while "$ref" in node:
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _branch(node: dict, kind: str, schema: dict) -> dict:
    """The branch of an `anyOf` (a value or null, a string or a list) that describes a `kind`."""
    for option in node.get("anyOf", []):
        option = _deref(option, schema)
        if option.get("type") == kind or (kind == "object" and "properties" in option):
            return option
    return node


# --- commands -----------------------------------------------------------------------------------

def commands(path: Path) -> list[tuple[int, str]]:
    """(line, command text after `recipes`) of every command the page shows."""
    found = []
    for block in code_blocks(path):
        if block.lang not in SHELL_LANGS:
            continue
        for offset, line in enumerate(block.text.splitlines()):
            for match in COMMAND_AT.finditer(line):
                found.append((block.line + offset, re.split(r"\s(?:&&|\|\|?|;)\s", line[match.end():])[0]))
    for number, span in prose_spans(path):
        match = COMMAND_AT.match(span)
        if match:
            found.append((number, span[match.end():]))
    return found


def check_command(text: str, main) -> list[str]:
    import click

    usage = text.replace("\\|", " ").replace("|", " ").replace("[", " ").replace("]", " ")
    try:
        tokens = shlex.split(usage, comments=True)
    except ValueError:  # an unbalanced quote in prose: plain words are enough to check names
        tokens = usage.split("#")[0].split()
    command, ctx = main, click.Context(main, info_name="recipes")
    index = 0
    while isinstance(command, click.Group) and index < len(tokens) and not tokens[index].startswith("-"):
        sub = command.get_command(ctx, tokens[index])
        if sub is None:
            return [f"`{ctx.command_path} {tokens[index]}`: no such command "
                    f"(known: {', '.join(sorted(command.list_commands(ctx)))})"]
        command, ctx = sub, click.Context(sub, info_name=tokens[index], parent=ctx)
        index += 1
    known = {name for param in command.get_params(ctx) for name in (*param.opts, *param.secondary_opts)}
    problems = []
    for token in tokens[index:]:
        option = re.match(r"^(--?[A-Za-z][\w-]*)(=.*)?$", token)
        if option and option.group(1) not in known:
            problems.append(f"`{ctx.command_path}`: no option {option.group(1)} (it has: {', '.join(sorted(known))})")
    return problems


def check_page(path: Path, registry, schema: dict, main, workdir: Path) -> list[str]:
    """Every problem of one page's snippets, each naming the page and line."""
    problems = []
    for block in code_blocks(path):
        if block.lang == "toml":
            problems += check_toml(block, registry, schema, workdir)
    for line, text in commands(path):
        problems += [f"{path.name}:{line}: {p}" for p in check_command(text, main)]
    return problems
