"""SwanLab tracker for qwen-recipes."""
