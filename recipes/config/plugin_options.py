"""A plugin's options (a format's, a backend's, a loss's, a benchmark scorer's), validated by the model
the plugin supplies, each error recorded at its place in the recipe. No torch."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from recipes.config.collector import Collector
from recipes.config.loaded import short
from recipes.config.schema import did_you_mean


def check_options(model: type[BaseModel], options: dict, where: tuple, problems: Collector,
                  flat: bool = False) -> None:
    """A plugin's options, validated by the model the plugin supplies."""
    try:
        model.model_validate(options)
    except ValidationError as exc:
        for error in exc.errors():
            key = error["loc"][0] if error["loc"] else None
            path = where + ((key,) if key is not None else ())
            if error["type"] == "extra_forbidden":
                known = sorted(model.model_fields) + (["backend"] if flat else [])
                problems.add(path, f"unknown option {key!r}; " + (did_you_mean(str(key), known) if known
                                                                  else "this takes no options"))
            else:
                problems.add(path, f"{error['msg']} (got {short(error.get('input'))})")
