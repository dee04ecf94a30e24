"""``recipes export RUN --to DIR --gguf TYPE``: llama.cpp's own converter and gguf-py, then a parity gate."""
