"""The `dolly` data format: {"instruction", "context", "response"} records become conversations."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import DataFormat, RecipeError, hookimpl, read_table

REQUIRES_RECIPES_API = 1  # the version of recipes.api this plugin is written for


class DollyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context_position: Literal["before", "after"] = Field(
        "after", description="Put the context before or after the instruction in the user turn.")


def read_dolly(path, options: DollyOptions):
    for where, record in read_table(path):
        try:
            instruction, response = record["instruction"], record["response"]
        except KeyError as exc:
            raise RecipeError(f"{where}: a dolly record needs {exc.args[0]!r}") from None
        context = record.get("context") or ""
        parts = [context, instruction] if options.context_position == "before" else [instruction, context]
        user = "\n\n".join(p for p in parts if p)
        yield {"messages": [{"role": "user", "content": user},
                            {"role": "assistant", "content": response}], "_where": where}


@hookimpl
def register_data_formats():
    return [DataFormat("dolly", "conversations", read_dolly, DollyOptions,
                       "databricks-dolly records: instruction, context, response.")]
