"""The base of every recipe model: unknown keys are errors (a misspelt key never passes silently)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
