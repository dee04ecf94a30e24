"""The options model of a provider that takes none (part of the plugin contract, recipes.plugins.hookspecs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """The options model of a provider that takes none: any key is an error."""

    model_config = ConfigDict(extra="forbid")
