"""Evaluation: run a program over a devset and score it with a metric.

``Evaluate(devset=..., metric=...)(program)`` gives an `EvaluationResult`
(``float(result)`` is the percentage score). Metrics for answers live in
`dspex.evaluate.metrics`; progress and tables in `dspex.evaluate.progress`.
"""

from dspex.evaluate.evaluate import Evaluate, EvaluationResult
from dspex.evaluate.metrics import (
    EM,
    F1,
    answer_exact_match,
    answer_passage_match,
    normalize_text,
)
from dspex.evaluate.runner import EvaluationFailure

__all__ = [
    "EM",
    "F1",
    "Evaluate",
    "EvaluationFailure",
    "EvaluationResult",
    "answer_exact_match",
    "answer_passage_match",
    "normalize_text",
]
