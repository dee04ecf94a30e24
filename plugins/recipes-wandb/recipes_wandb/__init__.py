"""Weights & Biases tracker for qwen-recipes."""
