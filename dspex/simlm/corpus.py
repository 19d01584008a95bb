"""The simulated LM's passage corpus, and search over it (its ColBERTv2-style endpoint).

The corpus is written from the bundled ``facts`` dataset: one passage per fact (the
capital, ruler, currency or river of an invented kingdom, stated in a sentence of its
own), plus a passage per kingdom that names it but holds none of its facts (a
distractor a search may rank high). Because the kingdoms are invented, a program can
answer the facts questions well only by finding the right passage; with that passage
in its context the simulated LM answers more often right (`oracle.context_gain`).

``search(query, k)`` ranks the passages by cosine similarity of the simulated
embeddings (`dspex.simlm.embeddings`), as a ColBERTv2 server ranks its index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from dspex.simlm import datasets
from dspex.simlm.embeddings import DEFAULT_DIM, embed_texts

MAX_K = 100

_KINGDOM = re.compile(r"kingdom of (\w+)")
_FACT_SENTENCES = {
    "capital of the kingdom": "{answer} is the capital of the kingdom of {kingdom}, where its court sits.",
    "rules the kingdom": "The kingdom of {kingdom} is ruled by {answer}.",
    "currency is used": "In the kingdom of {kingdom}, people pay with the {answer}.",
    "river flows": "{Answer} flows through the kingdom of {kingdom}.",
}
_TRADES = ("weavers", "glassblowers", "horse breeders", "salt miners", "shipwrights", "beekeepers")
_SEASONS = ("spring", "summer", "autumn", "winter")


@dataclass(frozen=True, slots=True)
class Passage:
    pid: int
    text: str


@cache
def passages() -> tuple[Passage, ...]:
    """The corpus, in a fixed order (pids are positions)."""
    texts: list[str] = []
    seen_kingdoms: list[str] = []
    for split in ("train", "dev"):
        for row in datasets.load("facts", split):
            texts.append(fact_passage(row["question"], str(row["answer"])))
            kingdom = _kingdom_of(row["question"])
            if kingdom not in seen_kingdoms:
                seen_kingdoms.append(kingdom)
    for i, kingdom in enumerate(seen_kingdoms):
        trade, season = _TRADES[i % len(_TRADES)], _SEASONS[i % len(_SEASONS)]
        texts.append(
            f"Travellers to the kingdom of {kingdom} remember its {trade} and its {season} fairs."
        )
    return tuple(Passage(pid, text) for pid, text in enumerate(texts))


def fact_passage(question: str, answer: str) -> str:
    """The sentence that states the answer to a facts question."""
    kingdom = _kingdom_of(question)
    for marker, template in _FACT_SENTENCES.items():
        if marker in question:
            return template.format(answer=answer, Answer=answer[:1].upper() + answer[1:], kingdom=kingdom)
    return f"About the kingdom of {kingdom}: {answer}."


def _kingdom_of(question: str) -> str:
    match = _KINGDOM.search(question)
    return match.group(1) if match else question


@cache
def _matrix() -> np.ndarray:
    return embed_texts([p.text for p in passages()], DEFAULT_DIM)


def search(query: str, k: int) -> list[dict[str, object]]:
    """The ``k`` passages nearest ``query``, best first, as ColBERTv2 records."""
    corpus = passages()
    k = max(0, min(k, len(corpus)))
    if k == 0:
        return []
    scores = _matrix() @ embed_texts([query], DEFAULT_DIM)[0]
    top = np.argsort(-scores, kind="stable")[:k]
    chosen = scores[top]
    weights = np.exp((chosen - chosen.max()) * 10.0)
    probs = weights / weights.sum()
    return [
        {
            "text": corpus[i].text,
            "long_text": corpus[i].text,
            "pid": int(corpus[i].pid),
            "rank": rank + 1,
            "score": round(float(scores[i]), 6),
            "prob": round(float(prob), 6),
        }
        for rank, (i, prob) in enumerate(zip(top, probs, strict=True))
    ]


__all__ = ["MAX_K", "Passage", "fact_passage", "passages", "search"]
