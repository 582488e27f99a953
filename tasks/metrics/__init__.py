"""Offline metrics, computed the way the official evaluation scripts compute them.

GLUE lives in `tasks.metrics.glue` (shared with the GLUE task). The others are pure functions over
text, each in its own module, plus `python -m tasks.metrics {e2e,dart,squad} ...`:

* `e2e`: e2e-metrics `measure_scores.py` — BLEU / NIST (`mteval`: its mteval-v13a-sig, own code),
  METEOR 1.5 / ROUGE-L / CIDEr (`coco`: pycocoevalcap's jars and code; needs Java).
* `dart`: GenerationEval as used by microsoft/LoRA — BLEU (multi-bleu-detok), METEOR 1.5
  (`-norm -r 6`, needs Java), TER (per-sentence pyter, min over references, averaged); METEOR
  and TER on nltk `word_tokenize` tokens, as LoRA's `eval.py`.
* `squad`: SQuAD v1.1 `evaluate-v1.1.py` exact match and F1.

Bad input raises `MetricInputError` (a ValueError). Nothing heavy is imported here, and
`python -m tasks.metrics` imports no deep-learning library (`tasks.TASKS` is lazy).
"""

from tasks.metrics._io import MetricInputError

__all__ = ["MetricInputError"]
