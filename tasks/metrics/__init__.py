"""Offline metrics, computed the way the official evaluation scripts compute them.

GLUE lives in `tasks.metrics.glue` (shared with the GLUE task). E2E, DART and SQuAD v1.1 live in
their own modules; `python -m tasks.metrics {e2e,dart,squad} ...` scores system outputs.
"""
