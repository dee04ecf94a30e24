"""1. Config: TOML text -> a validated ``Recipe``, every problem located by file, line and field (no torch)."""
