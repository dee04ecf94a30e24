"""A recipe written as TOML text, with comments: the few value kinds a recipe holds (strings, numbers,
booleans, lists of them, inline tables of options). No TOML library writes comments; this does."""

from __future__ import annotations

import json
import math


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to a recipe")
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def assignments(values: dict) -> list[str]:
    return [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]


def comment_lines(lines: list[str]) -> list[str]:
    return [f"# {line}" if line else "#" for line in lines]
