"""The one seam between the engine and what it knows of a model family.

The engine (``recipes``) knows no model by name: the special tokens it ends turns and documents with,
the chat template it falls back on, the linear layers LoRA may target, the shapes ``recipes plan``
counts, the models and recipes it ships and the sample data are a ``ModelFamily``, which a plugin
provides through the ``register_model_families`` hook. ``qwen_recipes`` provides Qwen's (entry point
``qwen`` in the group ``recipes.plugins``). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class BundledModel:
    """A model the family ships as a recipe's ``model.path = "bundled:NAME"``.

    ``config``: its config.json as a dict (validate and plan read it without building anything);
    ``build_id``: changes whenever what ``path`` builds changes (part of a stage's fingerprint);
    ``path(console)``: the model folder, built on first use (console: a rich console to say so, or None)."""

    name: str
    config: dict
    build_id: str
    path: Callable[[Any], Path]


@dataclass(frozen=True)
class ModelFamily:
    """What the engine needs to know of a model family.

    - ``turn_end`` / ``end_of_text``: the token that ends a chat turn (generation of a trained SFT
      model stops there) and the one between pre-training documents (also the padding token).
    - ``chat_template()``: the template used when a tokenizer has none.
    - ``ollama_template()``, optional: that chat template in Ollama's Go template syntax, the TEMPLATE
      of the Modelfile ``recipes export --ollama`` writes (without it, a chat stage's export is refused).
    - ``linear_modules``: config ``model_type`` -> the linear layers of one decoder block (LoRA
      targets ``validate`` accepts).
    - ``shape_of(config)``: a config.json dict -> the shape ``recipes plan`` counts parameters and
      memory with (see ``qwen_recipes.shapes.Shape``); raises ``UnknownArchitecture`` (any
      ``ValueError``) for configs it cannot read.
    - ``known_configs``: hub id -> a shipped config.json (so ``validate`` and ``plan`` know the model
      without a download).
    - ``bundled_models``: name -> ``BundledModel``; ``bundled_recipes()``: recipe name -> file;
      ``data_dir``: the folder ``bundled:FILE`` data paths name.
    - ``native_model(folder, console)``, optional: a model folder the engine should train instead of
      ``folder`` (for example a converted checkpoint), or None to train ``folder`` as it is.
    - ``native_config(config)``, optional: the config.json a model of this config trains as (Qwen v1:
      its native Qwen2 conversion), or None when it trains as it is; ``validate`` and ``plan`` use it.
    - ``native_targets(targets)``: such a model's LoRA targets in the native names, with one note
      per translated name; ``target_aliases``: model_type -> {name: native names} it accepts.
    - ``conversion_record``: the file name a conversion leaves in its folder (JSON about the source,
      e.g. its ``chat_format``), or None.
    - ``convert(source, target, console)``, optional: ``recipes convert`` (a checkpoint into a native
      folder).
    """

    name: str
    turn_end: str
    end_of_text: str
    chat_template: Callable[[], str]
    linear_modules: dict
    shape_of: Callable[[dict], Any]
    known_configs: dict = field(default_factory=dict)
    bundled_models: dict = field(default_factory=dict)
    bundled_recipes: Callable[[], dict] = dict
    data_dir: Optional[Path] = None
    native_model: Optional[Callable[[Path, Any], Optional[Path]]] = None
    native_config: Optional[Callable[[dict], Optional[dict]]] = None
    native_targets: Optional[Callable[[Any], tuple]] = None
    target_aliases: dict = field(default_factory=dict)
    conversion_record: Optional[str] = None
    convert: Optional[Callable[[str, Path, Any], Path]] = None
    ollama_template: Optional[Callable[[], str]] = None


def family() -> ModelFamily:
    """The model family of this installation (one plugin provides it; Qwen's by default)."""
    from recipes.plugins.registry import get_registry

    return get_registry().family
