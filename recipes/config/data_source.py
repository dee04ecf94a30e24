"""One data source of a stage, as the recipe gives it: files and a format, or a LLaMA-Factory
``dataset_info.json`` entry; its name and its part of the stage's mix. No torch."""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import Field, model_validator

from recipes.config.strict import Strict


class DataSource(Strict):
    """One data source of a stage: files, how to read them, and the format's own options; or an entry
    of a LLaMA-Factory ``dataset_info.json`` (which names the files, format and columns itself)."""

    path: Optional[str] = Field(None, description="A file, folder or glob; relative to the recipe file. "
                                "`bundled:NAME` names a sample file shipped with qwen_recipes.")
    format: Optional[str] = Field(None, description="A data format provided by a plugin (`recipes plugins` lists them).")
    dataset_info: Optional[str] = Field(None, description="A LLaMA-Factory dataset_info.json (relative to the "
                                        "recipe file); with `dataset`, instead of path and format.")
    dataset: Optional[str] = Field(None, description="The entry of `dataset_info` to use.")
    options: dict[str, Any] = Field(default_factory=dict, description="The format's own options (they add to "
                                    "and override what a dataset_info entry sets).")
    name: Optional[str] = Field(None, description="Names the source in the shares, the per-source losses and the "
                                "evaluation matrix; default: the file's stem (a folder's or glob's folder name, "
                                "the dataset entry). Two sources of a stage cannot share a name.")
    weight: Optional[float] = Field(None, gt=0, description="Training data only: this source's share of the "
                                    "stage's training tokens (normalised over the stage's sources, so shares need "
                                    "not sum to 1); a source is over- or under-sampled, seeded. Give every source "
                                    "of the stage a weight, or none (concatenation). One epoch is one pass over the "
                                    "stage's main source (see `main`); the others are sampled to their shares "
                                    "around it.")
    main: Optional[bool] = Field(None, description="Weighted training data only: one epoch of the stage is one "
                                 "pass over this source (default: the source with the largest weight).")
    max_samples: Optional[int] = Field(None, gt=0, description="Use at most the first N examples of this source "
                                       "(LLaMA-Factory's max_samples; pre-training: blocks of cutoff_len).")
    max_tokens: Optional[int] = Field(None, gt=0, description="Use at most the first examples of this source "
                                      "that hold this many tokens.")

    @model_validator(mode="after")
    def _one_way(self):
        if self.dataset_info is not None or self.dataset is not None:
            if self.dataset_info is None or self.dataset is None:
                raise ValueError("give both dataset_info and dataset (a LLaMA-Factory index and its entry)")
            if self.path is not None or self.format is not None:
                raise ValueError("give either path and format, or dataset_info and dataset, not both")
        elif self.path is None or self.format is None:
            raise ValueError("give path and format (or dataset_info and dataset)")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError("name: use letters, digits, '_', '-' or '.', starting with a letter or digit")
        return self

    def default_name(self) -> str:
        """The source's name: ``name``, else the file's stem, a folder's or glob's last plain part, or
        the dataset entry."""
        if self.name is not None:
            return self.name
        if self.dataset is not None:
            return self.dataset
        spec = self.path.split(":", 1)[1] if self.path.startswith("bundled:") else self.path
        plain = [part for part in re.split(r"[\\/]", spec) if part and not re.search(r"[*?\[]", part)]
        last = plain[-1] if plain else "data"
        for suffix in (".gz", ".zst", ".bz2", ".xz"):
            last = last[:-len(suffix)] if last.endswith(suffix) else last
        return last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
