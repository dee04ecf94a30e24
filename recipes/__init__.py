"""recipes: run a whole Qwen domain-adaptation plan from one declarative recipe file.

The road a recipe travels: ``cli`` -> ``load`` (TOML -> validated ``schema.Recipe``) ->
``plan`` (ordered stages with resolved bases and paths) -> ``runner`` -> ``stage`` (tokenizer,
model through a quantization backend, LoRA, data, HF Trainer, publish).
"""

__version__ = "0.1.0"
