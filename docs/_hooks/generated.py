"""The documentation site's generated parts, computed from the code at build time so they cannot drift.

mkdocs calls the two hooks at the bottom (mkdocs.yml names this file under `hooks:`):

- a page line `<!-- generated: NAME -->` is replaced by what ``GENERATORS[NAME]`` returns: the recipe
  reference from the JSON Schema that `recipes schema` prints, the LLaMA-Factory key table from the
  importer's own tables, every command's `--help` from click's command tree, the memory tables that
  `recipes plan` prints for the bundled 7B recipes, the hooks of the plugin
  contract from its hookspecs module, and bench/RESULTS.md;
- a page listed under `extra: optional_pages:` in mkdocs.yml joins the nav, after the page named
  beside it, only when its file exists (pages being written elsewhere slot in when they land, and
  `mkdocs build --strict` does not fail while they are absent).

Nothing here downloads anything: it needs the installed `recipes` and the repository's files only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)


# --- the recipe reference, from the JSON Schema -------------------------------------------------

def recipe_reference(schema: dict | None = None) -> str:
    """Every key of the recipe format as tables: type, default, description; the stage kinds; the
    installed plugins' options (quantization backends, data formats, losses) and callbacks."""
    from recipes.config.schema import KIND_DEFAULTS

    if schema is None:
        from recipes.config.json_schema import recipe_schema
        from recipes.plugins.registry import get_registry

        schema = recipe_schema(get_registry())
    defs = schema.get("$defs", {})
    out: list[str] = []

    def section(title: str, text: str, properties: dict, required=(), skip=(), kind_defaults=False):
        out.extend([f"## {title}", "", text, ""])
        rows = [(key, prop) for key, prop in properties.items() if key not in skip]
        if not rows:
            out.extend(["(no options)", ""])
            return
        kinds = sorted(KIND_DEFAULTS) if kind_defaults else []
        head = ["key", "type"] + ([f"default ({kind})" for kind in kinds] or ["default"]) + ["description"]
        out.extend(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)])
        for key, prop in rows:
            prop = _resolve(prop, defs)
            if kinds:
                defaults = [_value(KIND_DEFAULTS[kind].get(key, None)) for kind in kinds]
            else:
                defaults = ["required" if key in required else _value(prop.get("default"))]
            cells = [f"`{key}`", _type(prop, defs), *defaults, _cell(prop.get("description", ""))]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    top = schema["properties"]
    tables = {key for key, prop in top.items() if _ref_name(prop) in defs}
    described = {key: prop if prop.get("description") else {**prop, "description": _model_description(prop, defs)}
                 for key, prop in top.items()}
    section("Top-level keys", "Plain keys go above the first `[table]` of the recipe; the tables are "
            "described below.", described, schema.get("required", ()))
    for key in sorted(tables - {"stages", "defaults"}):
        model = defs[_ref_name(top[key])]
        section(f"[{key}]", _cell(model.get("description", "")), model.get("properties", {}), model.get("required", ()))
        _plugin_sections(out, model, defs, f"[{key}]")
    arrays = {key: _ref_name(_array_items(prop)) for key, prop in top.items() if key != "stages"}
    for key, name in sorted((k, n) for k, n in arrays.items() if n in defs and "properties" in defs[n]):
        model = defs[name]  # an array of tables at the top level, e.g. [[benchmarks]]
        section(f"[[{key}]]", _cell(model.get("description", "")), model.get("properties", {}), model.get("required", ()))

    settings = defs.get("Settings", {})
    section("Training settings: [defaults] and each [[stages]]",
            "Each key may sit in `[defaults]` (shared by every stage) or in a stage (which wins). A key set "
            "in neither takes the seed plan's default for the stage's kind, shown per kind.",
            settings.get("properties", {}), kind_defaults=True)
    _plugin_sections(out, settings, defs, "a stage's")

    stage = defs.get("Stage", {})
    stage_props = stage.get("properties", {})
    section("[[stages]]", "One stage of the plan, run in order. Besides the training settings above:", stage_props,
            stage.get("required", ()), skip=set(settings.get("properties", {})))
    kinds = _resolve(stage_props.get("kind", {}), defs)
    out.extend(["### Stage kinds", "", "`kind` is one of: " + ", ".join(f"`{k}`" for k in _enum(kinds)) + ".", ""])
    kind_branches = [b for b in stage.get("allOf", []) if "kind" in b["if"]["properties"]]
    _plugin_sections(out, {"allOf": kind_branches}, defs, "a stage's")  # each kind's own kind_options

    source = defs.get("DataSource", {})
    section("[[stages.data]] and [[stages.eval_data]]", _cell(source.get("description", "")),
            source.get("properties", {}), source.get("required", ()))
    _plugin_sections(out, source, defs, "a data source's")
    _filter_sections(out, _resolve(source.get("properties", {}).get("filters", {}), defs), defs)

    callbacks = _enum(_array_items(top.get("callbacks", {})))
    if callbacks:
        out.extend(["## Callbacks", "", "`callbacks = [...]` names these (installed) callback plugins: "
                    + ", ".join(f"`{c}`" for c in callbacks) + ".", ""])
    return "\n".join(out)


def _filter_sections(out: list[str], filters: dict, defs: dict):
    """The document filters a source's ``filters`` table may name (a row each), then each one's options."""
    named = filters.get("properties", {})
    if not named:
        return
    out.extend(["### filters", "", "The keys of a data source's `filters` table: `NAME = true` (its default options), "
                "a table of its options, or `false`.", "", "| key | type | default | description |",
                "|---|---|---|---|"])
    out.extend(f"| `{name}` | boolean or table |  | {_cell(prop.get('description', ''))} |" for name, prop in named.items())
    out.append("")
    for name, prop in named.items():
        body = next((b for b in prop.get("anyOf", []) if "properties" in b), {})
        out.extend([f"### filter `{name}`", "", f"The options of `filters = {{{name} = {{...}}}}`.", ""])
        rows = list(body.get("properties", {}).items())
        if not rows:
            out.extend(["(no options)", ""])
            continue
        out.extend(["| key | type | default | description |", "|---|---|---|---|"])
        for key, option in rows:
            option = _resolve(option, defs)
            out.append(f"| `{key}` | {_type(option, defs)} | {_value(option.get('default'))} | "
                       f"{_cell(option.get('description', ''))} |")
        out.append("")


def _plugin_sections(out: list[str], model: dict, defs: dict, where: str):
    """The options a plugin adds under a `key = value` choice (`allOf` of if/then in the schema)."""
    for branch in model.get("allOf", []):
        [(switch, cond)] = branch["if"]["properties"].items()
        then = branch["then"]
        props = then.get("properties", {})
        nested = next((k for k, v in props.items() if isinstance(v, dict) and "properties" in v), None)
        if nested is not None:  # the options live under a key of their own: `options`, `loss_options`
            body, label = props[nested], f"`{nested}` of {where} `{switch} = \"{cond['const']}\"`"
        else:
            body, label = then, f"{where} options with `{switch} = \"{cond['const']}\"`"
        heading = f"### {switch} `{cond['const']}`"
        out.extend([heading, "", _cell(body.get("description", "")) or f"The {label}.", ""])
        rows = [(k, v) for k, v in body.get("properties", {}).items() if k != switch]
        if not rows:
            out.extend(["(no options)", ""])
            continue
        out.extend(["| key | type | default | description |", "|---|---|---|---|"])
        required = set(body.get("required", ()))
        for key, prop in rows:
            prop = _resolve(prop, defs)
            default = "required" if key in required else _value(prop.get("default"))
            out.append(f"| `{key}` | {_type(prop, defs)} | {default} | {_cell(prop.get('description', ''))} |")
        out.append("")


def _model_description(prop: dict, defs: dict) -> str:
    """A table's (or a list of tables') description, from its model's docstring."""
    name = _ref_name(prop) or _ref_name(_array_items(prop))
    return defs.get(name, {}).get("description", "") if name else ""


def _ref_name(prop: dict) -> str | None:
    for branch in [prop, *prop.get("anyOf", []), *prop.get("allOf", [])]:
        if "$ref" in branch:
            return branch["$ref"].rsplit("/", 1)[-1]
    return None


def _resolve(prop: dict, defs: dict) -> dict:
    """An enum or alias behind a `$ref` reads as the property itself (keeping its own description)."""
    name = _ref_name(prop) if "$ref" in prop else None
    if name and "properties" not in defs.get(name, {}):
        return {**defs[name], **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _array_items(prop: dict) -> dict:
    for branch in [prop, *prop.get("anyOf", [])]:
        if branch.get("type") == "array":
            return branch.get("items", {})
    return {}


def _enum(prop: dict) -> list:
    if "enum" in prop:
        return list(prop["enum"])
    if "const" in prop:
        return [prop["const"]]
    return [v for branch in prop.get("anyOf", []) for v in _enum(branch)]


def _type(prop: dict, defs: dict) -> str:
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    parts = []
    for branch in branches:
        branch = _resolve(branch, defs)
        if "$ref" in branch:
            parts.append("table")
        elif "enum" in branch or "const" in branch:
            parts.append(" \\| ".join(f"`{json.dumps(v)}`" for v in _enum(branch)))
        elif branch.get("type") == "array":
            parts.append(f"list of {_type(branch.get('items', {}), defs)}")
        elif branch.get("type") == "object":
            parts.append("table")
        else:
            parts.append(str(branch.get("type", "any")) + _bounds(branch))
    return " or ".join(parts) or "any"


def _bounds(prop: dict) -> str:
    marks = [(">", "exclusiveMinimum"), ("≥", "minimum"), ("<", "exclusiveMaximum"), ("≤", "maximum"),
             ("at least", "minItems")]
    return "".join(f" {sign} {prop[key]}" for sign, key in marks if key in prop)


def _value(value) -> str:
    if value is None:
        return ""
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """Text for one table cell: one line, `|` escaped, and `<`, `>` outside code spans escaped so that
    `<think>` or `<|im_end|>` reads as text instead of vanishing as an HTML tag."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


# --- the LLaMA-Factory key mapping, from the importer's own tables ----------------------------

def llamafactory_keys() -> str:
    """The importer's table as Markdown: its own `render_key_table()` where it has one, else built
    from its SETTINGS and LEFT_OUT tables."""
    from recipes.config.importing import llamafactory_keys as keys

    render = getattr(keys, "render_key_table", None)
    if callable(render):
        return render()
    out = ["| LLaMA-Factory key | recipe key | LLaMA-Factory's default, written when the config leaves it out |",
           "|---|---|---|"]
    no_default = getattr(keys, "NO_DEFAULT", object())
    for key, (ours, default) in sorted(getattr(keys, "SETTINGS", {}).items()):
        shown = "" if default is no_default else ("`lora_rank * 2`" if default is None else _value(default))
        out.append(f"| `{key}` | `{ours}` | {shown} |")
    out.extend(["", "Read by the importer itself (the model, the method, the data, precision, the chain, "
                "exports; see the table above): " + ", ".join(f"`{k}`" for k in getattr(keys, "HANDLED", ())) + ".",
                "", "| LLaMA-Factory key | left out, because |", "|---|---|"])
    for key, why in sorted(getattr(keys, "LEFT_OUT", {}).items()):
        out.append(f"| `{key}` | {_cell(why)} |")
    return "\n".join(out)


# --- every command's --help, from click's command tree -----------------------------------------

def command_help() -> str:
    import click

    from recipes.cli import main

    out: list[str] = []

    def visit(command: click.Command, ctx: click.Context):
        if ctx.parent is not None and not getattr(command, "hidden", False):
            out.extend([f"## {ctx.command_path}", "", "```text", command.get_help(ctx).rstrip(), "```", ""])
        if isinstance(command, click.Group):
            for name in sorted(command.list_commands(ctx)):
                sub = command.get_command(ctx, name)
                visit(sub, click.Context(sub, info_name=name, parent=ctx, terminal_width=100, max_content_width=100))

    visit(main, click.Context(main, info_name="recipes", terminal_width=100, max_content_width=100))
    return "\n".join(out)


# --- the benchmark results, from bench/RESULTS.md ----------------------------------------------

def bench_results() -> str:
    """bench/RESULTS.md under this page's own title: its headings one level down, its title dropped."""
    text = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    text = re.sub(r"\A# .*\n", "", text)
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


# --- memory tables, from `recipes plan` of the bundled 7B recipes -------------------------------

def memory_tables() -> str:
    """What `recipes plan NAME` prints for the first stage of each bundled 7B recipe, computed the way
    the command computes it (from the shipped config.json; no weights, no torch)."""
    from recipes.config.load import load_recipe
    from recipes.planning.estimate import estimate_lines, recipe_estimate
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    out = []
    for name, what in (("domain_qwen", "LoRA r=16 on every linear layer of Qwen2.5-7B"),
                       ("domain_qwen_qlora", "the same in 4-bit nf4: QLoRA")):
        loaded = load_recipe(name, registry)
        lines = estimate_lines(recipe_estimate(loaded, make_plan(loaded, registry), "cuda", False, 1))
        second = next((i for i, line in enumerate(lines) if line.startswith("2. ")), len(lines))
        out.extend([f"`recipes plan {name}` ({what}; its first stage):", "", "```text", *lines[:second], "```", ""])
    return "\n".join(out)


# --- the plugin hooks, from the hookspecs module -----------------------------------------------

def hook_table() -> str:
    """One row per hook of the contract: its name and the first paragraph of its docstring."""
    import inspect

    from recipes.plugins import hookspecs

    out = ["| hook | what it returns |", "|---|---|"]
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(spec, "recipes_spec"):
            first = (inspect.getdoc(spec) or "").split("\n\n")[0].replace("``", "`")
            out.append(f"| [`{name}()`](plugin_hooks.md#{name}) | {_cell(first)} |")
    return "\n".join(out)


GENERATORS = {"hooks": hook_table, "memory-tables": memory_tables, "recipe-reference": recipe_reference, "llamafactory-keys": llamafactory_keys,
              "commands": command_help, "bench-results": bench_results}


def render(markdown: str) -> str:
    """A page's Markdown with each marker replaced by its generated text."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]().rstrip() + "\n"

    return MARKER.sub(replace, markdown)


def with_optional_pages(nav: list, optional: list[dict], docs_dir: Path) -> list:
    """``nav`` with each optional page whose file exists inserted after the page it names; pages
    already in the nav, or whose anchor page is not, are left as they are."""
    listed = set(_nav_files(nav))
    for entry in optional:
        page, title, after = entry["page"], entry["title"], entry["after"]
        if page in listed or not (docs_dir / page).is_file():
            continue
        if _insert_after(nav, after, {title: page}):
            listed.add(page)
    return nav


def _nav_files(nav) -> list[str]:
    found = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        found.extend(_nav_files(value) if isinstance(value, list) else [value])
    return found


def _insert_after(nav: list, after: str, new: dict) -> bool:
    for index, item in enumerate(nav):
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if value == after:
            nav.insert(index + 1, new)
            return True
        if isinstance(value, list) and _insert_after(value, after, new):
            return True
    return False


# --- mkdocs hooks ---------------------------------------------------------------------------------

def on_config(config):
    optional = (config.extra or {}).get("optional_pages", [])
    if config.nav and optional:
        config.nav = with_optional_pages(config.nav, optional, Path(config.docs_dir))
    return config


def on_page_markdown(markdown, page, config, files):
    return render(markdown)
