"""6. Outputs: what a finished run gives: export, the report and its curves."""
