"""Answer metrics: exact match, token F1 and passage match on normalised text.

Normalisation follows the SQuAD convention, so scores are comparable with
published numbers: case, punctuation, the articles "a/an/the" and runs of
whitespace do not count. Metrics take an example and a prediction by duck type:
anything with an ``answer`` (and, for passage match, ``context``) attribute or
key works, so plain dicts are fine in tests and notebooks.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "EM",
    "F1",
    "answer_exact_match",
    "answer_passage_match",
    "normalize_text",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: Any) -> str:
    """Lower-case, drop punctuation and articles, and collapse whitespace.

    Non-string values are compared through ``str()``, so ``42`` matches ``"42"``.
    """
    text = unicodedata.normalize("NFD", str(text)).lower()
    # Unicode category "P*" covers ASCII punctuation and also curly quotes,
    # dashes and the like that LMs like to emit. Removed, not spaced, as SQuAD
    # does: "1,000" is "1000".
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def EM(prediction: Any, answers_list: Any) -> bool:
    """Whether the prediction equals any acceptable answer after normalisation."""
    predicted = normalize_text(prediction)
    return any(predicted == normalize_text(answer) for answer in _as_answers(answers_list))


def F1(prediction: Any, answers_list: Any) -> float:
    """Best token-overlap F1 between the prediction and any acceptable answer."""
    predicted = normalize_text(prediction).split()
    scores = [_token_f1(predicted, normalize_text(a).split()) for a in _as_answers(answers_list)]
    return max(scores, default=0.0)


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    """``pred.answer`` matches ``example.answer`` (a string or a list of strings).

    With ``frac < 1`` the match is token F1 >= ``frac`` instead of equality.
    """
    answers = _field(example, "answer")
    predicted = _field(pred, "answer")
    if frac >= 1.0:
        return EM(predicted, answers)
    return F1(predicted, answers) >= frac


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    """Some acceptable answer occurs, as whole words, in some passage of ``pred.context``."""
    passages = _field(pred, "context")
    if isinstance(passages, str):
        passages = [passages]
    wanted = [normalize_text(a).split() for a in _as_answers(_field(example, "answer"))]
    # An answer that normalises to nothing ("the") would match every passage.
    wanted = [tokens for tokens in wanted if tokens]
    for passage in passages or ():
        words = normalize_text(passage).split()
        if any(_contains_run(words, tokens) for tokens in wanted):
            return True
    return False


def _as_answers(answers: Any) -> list[Any]:
    # A lone string is one answer, not a sequence of one-character answers.
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Iterable):
        return [answers]
    return list(answers)


def _token_f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        # Two empty answers agree; one empty answer shares nothing.
        return float(predicted == gold)
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def _contains_run(words: list[str], run: list[str]) -> bool:
    width = len(run)
    return any(words[i : i + width] == run for i in range(len(words) - width + 1))


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)
