"""An MLflow tracker for recipes runs: run name, the resolved recipe, per-stage metrics, the report."""
