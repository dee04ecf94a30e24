"""The JSON Schema of the recipe format, with the loaded plugins' own options, for editors.

Built from the pydantic models: the recipe's, then each quantization backend's and each data
format's and each loss function's options model and each stage kind's ``kind_options`` model, attached
with if/then on the `backend`, `format`, `loss` and `kind` values, so that an editor completes and
checks those options too; a source's ``filters`` table lists each document filter with its options.
"""

from __future__ import annotations

from pydantic import BaseModel

from recipes.plugins.registry import Registry
from recipes.config.schema import Recipe

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def recipe_schema(registry: Registry) -> dict:
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    schema = {"$schema": SCHEMA_DIALECT, "title": "recipes recipe", **schema}

    quantization = defs["Quantization"]
    quantization["properties"]["backend"]["enum"] = sorted(registry.backends)
    quantization["allOf"] = [
        _when("backend", name, _options(backend.options_model, defs, extra_keys=("backend",)))
        for name, backend in sorted(registry.backends.items())]

    source = defs["DataSource"]
    source["properties"]["format"]["enum"] = sorted(registry.formats)
    source["allOf"] = [
        _when("format", name, {"properties": {"options": _options(fmt.options_model, defs)}})
        for name, fmt in sorted(registry.formats.items())]

    source["properties"]["filters"]["properties"] = {
        name: {"anyOf": [{"type": "boolean"}, _options(provider.options_model, defs)],
               "description": provider.description}
        for name, provider in sorted(registry.filters.items())}
    source["properties"]["filters"]["additionalProperties"] = False

    for settings in (defs["Settings"], defs["Stage"]):  # a stage's loss_options follow its loss
        settings["allOf"] = [
            _when("loss", name, {"properties": {"loss_options": _options(loss.options_model, defs)}})
            for name, loss in sorted(registry.losses.items())]

    stage = defs["Stage"]  # a stage's kind_options follow its kind
    stage["properties"]["kind"]["enum"] = sorted(registry.kinds)
    stage["allOf"] = stage.get("allOf", []) + [
        _when("kind", name, {"properties": {"kind_options": _options(kind.options_model, defs)}})
        for name, kind in sorted(registry.kinds.items())]

    callbacks = schema["properties"]["callbacks"]
    for branch in callbacks.get("anyOf", [callbacks]):
        if branch.get("type") == "array":
            branch["items"] = {"enum": sorted(registry.callbacks)}
    return schema


def _when(key: str, value: str, then: dict) -> dict:
    return {"if": {"properties": {key: {"const": value}}, "required": [key]}, "then": then}


def _options(model: type[BaseModel], defs: dict, extra_keys: tuple = ()) -> dict:
    """A plugin's options model as a subschema; its own $defs move up to the document's."""
    sub = model.model_json_schema()
    defs.update(sub.pop("$defs", {}))
    sub.setdefault("properties", {}).update({key: {} for key in extra_keys})
    sub["additionalProperties"] = False
    return sub
