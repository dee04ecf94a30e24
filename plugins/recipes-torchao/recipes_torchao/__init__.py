"""torchao int8 weight-only base weights for LoRA stages: a quantization backend plugin for recipes."""
