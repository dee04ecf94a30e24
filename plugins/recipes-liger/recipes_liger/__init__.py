"""Liger fused linear cross-entropy as a recipes loss function (CUDA GPUs)."""
