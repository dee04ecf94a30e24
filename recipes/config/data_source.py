"""One data source of a stage, as the recipe gives it: files and a format, or a LLaMA-Factory
``dataset_info.json`` entry; its name and its part of the stage's mix. No torch."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

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

    # cleaning (training sources of stages the host tokenizes; recipes.data.cleaning)
    dedup: Literal["none", "exact", "near"] = Field(
        "exact", description="Remove repeated documents (conversations), keeping the first: \"exact\" (the same "
        "text after normalisation, within this source and against the stage's earlier sources), \"near\" "
        "(MinHash LSH near-duplicates too: needs plugins/recipes-near-dedup), or \"none\". Every removal is counted.")
    near_threshold: float = Field(0.5, gt=0, lt=1, description="dedup = \"near\": the estimated Jaccard "
                                  "similarity of two documents' 5-grams above which the later one goes.")
    normalize: Literal["checks", "text", "none"] = Field(
        "checks", description="Unicode NFKC and whitespace normalisation: \"checks\" for what the filters and "
        "dedup compare (the trained text stays as read), \"text\" for the trained text too (documents only; NFKC "
        "turns full-width punctuation such as the Chinese comma into ASCII), \"none\".")
    script: Optional[Literal["cjk", "latin"]] = Field(
        None, description="The script this source's text is written in: \"cjk\" (Chinese, Japanese, Korean) or "
        "\"latin\"; the script filter keeps documents mostly in it, the repetition filters count character "
        "n-grams for CJK. Default: decided per document.")
    filters: dict[str, Union[bool, dict[str, Any]]] = Field(
        default_factory=dict, description="Document filters to run on this source, by name: `true` (their "
        "default options), a table of options, or `false`; e.g. {length = {min_chars = 200}, repeated_lines = "
        "true}. Built-in: length, script, repeated_lines, repeated_ngrams (`recipes plugins` lists them).")

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

    def cleaning_set(self) -> list[str]:
        """The cleaning keys the recipe gives (not left to their defaults)."""
        return [key for key in ("dedup", "near_threshold", "normalize", "script", "filters")
                if key in self.model_fields_set]

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
