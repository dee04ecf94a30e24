"""Qwen knowledge for recipes: the genuine Qwen tokenizer, the embedded tiny Qwen2 model, module
names per architecture, the ChatML template, and the bundled recipes and sample data.

Importing this package is cheap (no torch): ``recipes validate`` uses it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).parent
DATA_DIR = PACKAGE_DIR / "data"
RECIPES_DIR = PACKAGE_DIR / "recipes"
CHATML_TEMPLATE_PATH = PACKAGE_DIR / "templates" / "chatml.jinja"

CONFIGS_DIR = PACKAGE_DIR / "configs"

# Hub ids whose config.json ships with the package (shapes only, no weights), so that `recipes
# validate` and `recipes plan` know these models without a download.
KNOWN_CONFIGS = {
    "Qwen/Qwen2.5-7B": "Qwen2.5-7B.json",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen2.5-7B.json",
    "Qwen/Qwen-7B": "Qwen-7B.json",
    "Qwen/Qwen-7B-Chat": "Qwen-7B.json",
}

# bundled:NAME model sources -> what builds them (see qwen_recipes.tiny)
BUNDLED_MODELS = ("tiny-qwen2",)


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe name -> file."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.toml"))}


def ollama_template() -> str:
    """The same ChatML in Ollama's Go template syntax (a Modelfile's TEMPLATE), as Ollama's own qwen2.5
    model ships it: system (or the tool list), turns, tool calls and tool results as the Jinja renders them."""
    return (CHATML_TEMPLATE_PATH.parent / "chatml.ollama").read_text(encoding="utf-8")


def chatml_template() -> str:
    """Qwen2.5's ChatML chat template (system default, tools), without <think> tags."""
    return CHATML_TEMPLATE_PATH.read_text(encoding="utf-8")
