"""lm-evaluation-harness as a recipes benchmark scorer (see plugin.py)."""
