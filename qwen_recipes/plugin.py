"""Qwen as a model family for recipes (entry point ``qwen`` in the group ``recipes.plugins``): special
tokens, the ChatML template, Qwen2 and Qwen (v1) module names and shapes, the shipped configs, the
embedded tiny model, the bundled recipes and sample data. No torch here."""

from __future__ import annotations

from recipes.api import BundledModel, ModelFamily, hookimpl

from qwen_recipes import CONFIGS_DIR, DATA_DIR, KNOWN_CONFIGS, bundled_recipes, chatml_template, ollama_template
from qwen_recipes.architectures import END_OF_TEXT, LINEAR_MODULES, QWEN1_TARGETS, TURN_END, native_targets
from qwen_recipes.shapes import shape_of
from qwen_recipes.tiny import BUILD, CONFIG, tiny_qwen2_path

QWEN = ModelFamily(
    name="qwen",
    turn_end=TURN_END,
    end_of_text=END_OF_TEXT,
    chat_template=chatml_template,
    ollama_template=ollama_template,
    linear_modules=LINEAR_MODULES,
    shape_of=shape_of,
    known_configs={hub_id: CONFIGS_DIR / file for hub_id, file in KNOWN_CONFIGS.items()},
    bundled_models={"tiny-qwen2": BundledModel(
        "tiny-qwen2", {"model_type": "qwen2", "torch_dtype": "float32", **CONFIG}, BUILD, tiny_qwen2_path)},
    bundled_recipes=bundled_recipes,
    data_dir=DATA_DIR,
    native_model=lambda folder, console: _native_model(folder, console),
    native_config=lambda config: _native_config(config),
    native_targets=native_targets,
    target_aliases={"qwen": QWEN1_TARGETS},
    conversion_record="qwen1_source.json",
    convert=lambda source, target, console: _convert(source, target, console),
)


# Qwen v1 (QWenLMHeadModel) trains as its exact native Qwen2 conversion (qwen_recipes.convert)
def _native_model(folder, console):
    from qwen_recipes.convert import is_qwen1, native_model

    return native_model(str(folder), console) if is_qwen1(folder) else None


def _native_config(config: dict):
    if config.get("model_type") != "qwen":
        return None
    from qwen_recipes.convert import qwen2_config

    return qwen2_config(config)


def _convert(source, target, console):
    from qwen_recipes.convert import convert_to

    return convert_to(source, target, console)


@hookimpl
def register_model_families():
    return [QWEN]
