"""recipes-trl: preference alignment stages (DPO, KTO) for qwen-recipes, through TRL."""

__version__ = "0.1.0"
