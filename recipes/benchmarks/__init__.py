"""Multiple-choice benchmarks (C-Eval, CMMLU, MMLU, records) scored offline from their own files on
the starting model and after every stage: reading the layouts, choosing the items, the completion
prompt, letter-logit scoring, the statistics of a row and of a change, the report's section, the plan's
estimate, and the checks of `recipes validate` (docs/benchmarks.md)."""
