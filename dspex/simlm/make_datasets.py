"""Regenerate the simulated LM's bundled datasets (`data/*.jsonl`).

Run ``python -m dspex.simlm.make_datasets`` after changing a
generator. Output is a pure function of the code below (fixed seeds, sorted
choices), so regenerating gives byte-identical files. Every name in the
`facts` and `sentiment` worlds is invented from syllables, so answering needs
no real-world knowledge.

Each line is ``{"question", "answer", "task", "split"}``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).with_name("data")

# (train, dev) sizes per task
SPLITS: dict[str, tuple[int, int]] = {
    "arithmetic": (300, 200),
    "facts": (280, 200),
    "sentiment": (200, 150),
}


# --- arithmetic -------------------------------------------------------------


def _arithmetic_items(rng: random.Random) -> Iterator[tuple[str, int]]:
    """Endless stream of two-operand questions; duplicates are filtered later."""
    while True:
        op = rng.choice("+-*")
        if op == "+":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            yield f"What is {a} + {b}?", a + b
        elif op == "-":
            a, b = rng.randint(20, 99), rng.randint(1, 60)
            a, b = max(a, b), min(a, b)
            yield f"What is {a} - {b}?", a - b
        else:
            a, b = rng.randint(2, 30), rng.randint(2, 12)
            yield f"What is {a} * {b}?", a * b


# --- facts: an invented world of kingdoms -----------------------------------

_ONSETS = [
    "Var",
    "Ost",
    "Bel",
    "Quor",
    "Dra",
    "Mir",
    "Tel",
    "Zan",
    "Kyr",
    "Eld",
    "Fen",
    "Gal",
    "Hul",
    "Ith",
    "Jor",
    "Lum",
    "Nex",
    "Pry",
    "Rho",
    "Syl",
    "Thal",
    "Ulm",
    "Wyn",
    "Yor",
    "Brek",
    "Cas",
    "Dun",
    "Skel",
]
_MIDDLES = ["", "a", "e", "i", "o", "en", "ar", "il"]
_KINGDOM_ENDS = [
    "holt",
    "mark",
    "vale",
    "dor",
    "wyn",
    "reach",
    "moor",
    "gard",
    "fell",
    "heim",
    "stan",
    "oria",
]
_CITY_ENDS = ["by", "ton", "ford", "port", "haven", "stead", "wick", "mere", "bridge"]
_GIVEN: dict[str, list[str]] = {
    "King": [
        "Bram",
        "Dathen",
        "Fariq",
        "Hollis",
        "Jareth",
        "Lothar",
        "Norrin",
        "Perrin",
        "Rodric",
        "Ulric",
        "Wystan",
        "Corvan",
    ],
    "Queen": [
        "Ysolde",
        "Corvina",
        "Elspet",
        "Gwenna",
        "Isadra",
        "Katrin",
        "Maelis",
        "Oriel",
        "Quilla",
        "Seraphel",
        "Tamsin",
        "Vesna",
        "Zora",
    ],
}
_COIN_ENDS = ["crown", "mark", "drassil", "tallin", "obol", "sheck", "florin"]
_RIVER_ENDS = ["wash", "run", "water", "flow", "brook", "rill"]

_FACT_TEMPLATES: dict[str, str] = {
    "capital": "What is the capital of the kingdom of {k}?",
    "ruler": "Who rules the kingdom of {k}?",
    "currency": "What currency is used in the kingdom of {k}?",
    "river": "Which river flows through the kingdom of {k}?",
}


def _word(rng: random.Random, ends: list[str]) -> str:
    return rng.choice(_ONSETS) + rng.choice(_MIDDLES) + rng.choice(ends)


def _unique_words(rng: random.Random, ends: list[str], count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        word = _word(rng, ends)
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def _facts_items(rng: random.Random, kingdoms: int = 120) -> list[tuple[str, str]]:
    taken: set[str] = set()
    names = _unique_words(rng, _KINGDOM_ENDS, kingdoms, taken)
    cities = _unique_words(rng, _CITY_ENDS, kingdoms, taken)
    coins = [w.lower() for w in _unique_words(rng, _COIN_ENDS, kingdoms, taken)]
    rivers = [f"the {w}" for w in _unique_words(rng, _RIVER_ENDS, kingdoms, taken)]
    rulers: list[str] = []
    seen_rulers: set[str] = set()
    while len(rulers) < kingdoms:
        title = rng.choice(sorted(_GIVEN))
        ruler = f"{title} {rng.choice(_GIVEN[title])}"
        ruler += f" {rng.choice(['the Elder', 'the Younger', 'II', 'III', 'IV', 'the Bold'])}"
        if ruler not in seen_rulers:
            seen_rulers.add(ruler)
            rulers.append(ruler)
    items: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        answers = {
            "capital": cities[i],
            "ruler": rulers[i],
            "currency": coins[i],
            "river": rivers[i],
        }
        for kind, template in _FACT_TEMPLATES.items():
            items.append((template.format(k=name), answers[kind]))
    return items


# --- sentiment: reviews of invented products ----------------------------------

_PRODUCT_NOUNS = [
    "kettle",
    "lantern",
    "backpack",
    "blender",
    "desk lamp",
    "umbrella",
    "headset",
    "notebook",
    "bicycle bell",
    "tea set",
    "scooter",
    "clock",
]
_PHRASES: dict[str, list[str]] = {
    "positive": [
        "works beautifully",
        "exceeded my expectations",
        "is a joy to use",
        "was worth every coin",
        "feels sturdy and well made",
        "is one I would happily buy again",
    ],
    "negative": [
        "broke after two days",
        "was a waste of money",
        "feels flimsy and cheap",
        "stopped working within a week",
        "is something I regret buying",
        "arrived damaged",
    ],
    "neutral": [
        "does what the box says",
        "is neither good nor bad",
        "arrived on time",
        "is about what I expected",
        "looks like the picture",
        "is an ordinary product",
    ],
}


def _sentiment_items(rng: random.Random) -> Iterator[tuple[str, str]]:
    labels = sorted(_PHRASES)
    while True:
        label = rng.choice(labels)
        brand = _word(rng, _KINGDOM_ENDS)
        noun = rng.choice(_PRODUCT_NOUNS)
        first, second = rng.sample(_PHRASES[label], 2)
        joiner = rng.choice([", and it", ". Honestly, it", ". Also, it"])
        review = f"The {brand} {noun} {first}{joiner} {second}."
        yield f'What is the sentiment of this review: "{review}"', label


# --- assembly -------------------------------------------------------------------


def _take_unique(
    items: Iterator[tuple[str, Any]], count: int, seen: set[str]
) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for question, answer in items:
        if question.lower() in seen:
            continue
        seen.add(question.lower())
        out.append((question, answer))
        if len(out) == count:
            return out
    raise ValueError("generator ran dry before reaching the requested count")


def build(task: str) -> list[dict[str, Any]]:
    """All examples of one task, train rows first, in a fixed order."""
    train, dev = SPLITS[task]
    total = train + dev
    rng = random.Random(f"dspex-simlm-{task}")
    seen: set[str] = set()
    if task == "arithmetic":
        pairs = _take_unique(_arithmetic_items(rng), total, seen)
    elif task == "facts":
        all_facts = _facts_items(rng)
        rng.shuffle(all_facts)
        pairs = _take_unique(iter(all_facts), total, seen)
    elif task == "sentiment":
        pairs = _take_unique(_sentiment_items(rng), total, seen)
    else:
        raise KeyError(task)
    return [
        {"question": q, "answer": a, "task": task, "split": "train" if i < train else "dev"}
        for i, (q, a) in enumerate(pairs)
    ]


def main() -> None:
    DATA_DIR.mkdir(exist_ok=True)
    for task in SPLITS:
        rows = build(task)
        lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
        (DATA_DIR / f"{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
