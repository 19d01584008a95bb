"""Sentiment classification, written as a DSPy program: only the import names dspex.

A typed signature (a Literal label) classifies product reviews. We score it on a
dev set, optimize it with BootstrapFewShotWithRandomSearch, save the optimized
program two ways (its state as JSON, and the whole program as a directory), load
both back, and check the loaded programs give the same labels.

    python examples/dspy_classify.py                     # starts the simulated LM itself
    python examples/dspy_classify.py --api-base http://127.0.0.1:8000/v1 --model openai/sim-1

With no --api-base (nor LM_API_BASE in the environment) the script starts dspex's
simulated LM on 127.0.0.1, so it needs no key and no network. --output-dir keeps
the saved programs (by default they go to a temporary directory).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dspex as dspy

# --- Labelled reviews (label, review). ---------------------------------------------

TRAIN = [
    ("positive", "The Belilholt desk lamp feels sturdy and well made. Also, it is a joy to use."),
    (
        "positive",
        "The Thalaoria lantern was worth every coin. Honestly, it is one I would happily buy again.",
    ),
    ("negative", "The Prywyn blender arrived damaged. Also, it stopped working within a week."),
    ("negative", "The Syloria notebook arrived damaged, and it is something I regret buying."),
    ("neutral", "The Quorimoor lantern is neither good nor bad. Also, it looks like the picture."),
    (
        "negative",
        "The Wynarholt scooter broke after two days. Honestly, it is something I regret buying.",
    ),
    ("positive", "The Skelovale blender works beautifully, and it was worth every coin."),
    ("neutral", "The Itharfell lantern arrived on time. Honestly, it is neither good nor bad."),
    ("neutral", "The Mirenstan headset is an ordinary product, and it arrived on time."),
    (
        "negative",
        "The Sylafell tea set is something I regret buying. Honestly, it was a waste of money.",
    ),
    (
        "neutral",
        "The Skelilstan desk lamp does what the box says. Also, it is about what I expected.",
    ),
    ("negative", "The Thaleoria umbrella arrived damaged. Also, it stopped working within a week."),
    (
        "negative",
        "The Eldogard clock was a waste of money. Also, it stopped working within a week.",
    ),
    (
        "negative",
        "The Draidor desk lamp is something I regret buying, and it feels flimsy and cheap.",
    ),
    ("positive", "The Skelemoor headset exceeded my expectations, and it works beautifully."),
    (
        "neutral",
        "The Yorilreach bicycle bell is neither good nor bad, and it is an ordinary product.",
    ),
    (
        "negative",
        "The Thalheim scooter was a waste of money. Honestly, it stopped working within a week.",
    ),
    (
        "negative",
        "The Zanevale umbrella was a waste of money. Also, it stopped working within a week.",
    ),
    (
        "neutral",
        "The Brekooria bicycle bell is an ordinary product. Honestly, it is neither good nor bad.",
    ),
    (
        "negative",
        "The Zanenoria blender broke after two days. Honestly, it is something I regret buying.",
    ),
    ("neutral", "The Sylheim clock looks like the picture, and it is about what I expected."),
    ("negative", "The Eldilheim desk lamp arrived damaged. Also, it broke after two days."),
    ("neutral", "The Zaniholt lantern looks like the picture. Also, it is neither good nor bad."),
    ("positive", "The Telgard notebook exceeded my expectations. Also, it works beautifully."),
]
DEV = [
    (
        "neutral",
        "The Zanovale desk lamp is neither good nor bad. Honestly, it looks like the picture.",
    ),
    ("neutral", "The Sylestan clock is an ordinary product, and it looks like the picture."),
    ("positive", "The Rhoiwyn backpack was worth every coin. Also, it exceeded my expectations."),
    ("neutral", "The Ostioria blender is neither good nor bad. Also, it is about what I expected."),
    ("neutral", "The Varoria desk lamp arrived on time, and it is an ordinary product."),
    ("neutral", "The Kyrogard desk lamp is neither good nor bad, and it does what the box says."),
    (
        "neutral",
        "The Pryarstan bicycle bell is about what I expected. Also, it is neither good nor bad.",
    ),
    (
        "negative",
        "The Itharreach kettle is something I regret buying. Also, it stopped working within a week.",
    ),
    (
        "negative",
        "The Brekenmark clock is something I regret buying, and it stopped working within a week.",
    ),
    (
        "negative",
        "The Belarwyn tea set stopped working within a week, and it feels flimsy and cheap.",
    ),
    (
        "neutral",
        "The Wynaroria desk lamp is neither good nor bad. Honestly, it is about what I expected.",
    ),
    ("positive", "The Lumarfell desk lamp feels sturdy and well made, and it works beautifully."),
    ("positive", "The Eldowyn umbrella feels sturdy and well made. Also, it is a joy to use."),
    ("negative", "The Galardor headset arrived damaged. Honestly, it was a waste of money."),
    ("negative", "The Ulmewyn notebook broke after two days. Honestly, it feels flimsy and cheap."),
    (
        "positive",
        "The Varogard backpack works beautifully, and it is one I would happily buy again.",
    ),
    ("neutral", "The Itharvale blender does what the box says, and it is neither good nor bad."),
    ("positive", "The Yoriwyn kettle is a joy to use. Also, it is one I would happily buy again."),
    ("negative", "The Kyrgard headset was a waste of money. Also, it feels flimsy and cheap."),
    (
        "positive",
        "The Fenowyn tea set is one I would happily buy again. Honestly, it was worth every coin.",
    ),
    (
        "negative",
        "The Joreheim scooter arrived damaged. Honestly, it stopped working within a week.",
    ),
    ("negative", "The Draarwyn scooter was a waste of money. Also, it arrived damaged."),
    ("neutral", "The Casedor headset is an ordinary product. Honestly, it arrived on time."),
    (
        "neutral",
        "The Draenholt desk lamp is about what I expected. Honestly, it is an ordinary product.",
    ),
    ("neutral", "The Kyrarvale tea set is neither good nor bad, and it is an ordinary product."),
    ("negative", "The Rhoenstan scooter broke after two days. Also, it arrived damaged."),
    ("negative", "The Zanarholt lantern broke after two days. Honestly, it was a waste of money."),
    (
        "positive",
        "The Lumarmoor bicycle bell was worth every coin. Also, it feels sturdy and well made.",
    ),
    ("positive", "The Vararreach clock exceeded my expectations. Honestly, it works beautifully."),
    (
        "neutral",
        "The Thalilfell desk lamp is about what I expected, and it looks like the picture.",
    ),
]


def to_examples(rows: list[tuple[str, str]]) -> list[dspy.Example]:
    return [
        dspy.Example(review=review, sentiment=label).with_inputs("review") for label, review in rows
    ]


# --- The program. ------------------------------------------------------------------


class Sentiment(dspy.Signature):
    """Classify the sentiment a product review expresses."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()


def label_matches(example, pred, trace=None) -> bool:
    return example.sentiment == pred.sentiment


def labels(program, devset: list[dspy.Example]) -> list[str]:
    return [program(**example.inputs()).sentiment for example in devset]


# --- Running it. -------------------------------------------------------------------


@contextlib.contextmanager
def language_model(api_base: str | None, model: str) -> Iterator[dspy.LM]:
    """The LM at --api-base, or the simulated LM started here when none is given."""
    if api_base:
        api_key = os.environ.get("OPENAI_API_KEY", "local")
        yield dspy.LM(model, api_base=api_base, api_key=api_key, cache=False)
        return
    from dspex.simlm import start_sim_lm

    with start_sim_lm(seed=0) as server:
        yield dspy.LM(model, api_base=server.url, api_key="local", cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-base", default=os.environ.get("LM_API_BASE"))
    parser.add_argument("--model", default=os.environ.get("LM_MODEL", "openai/sim-1"))
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()

    trainset, devset = to_examples(TRAIN), to_examples(DEV)
    with (
        language_model(args.api_base, args.model) as lm,
        tempfile.TemporaryDirectory() as scratch,
    ):
        dspy.configure(lm=lm)
        output_dir = Path(args.output_dir or scratch)

        classify = dspy.ChainOfThought(Sentiment)
        pred = classify(review=devset[0].review)
        print(f"Review: {devset[0].review}")
        print(f"Predicted: {pred.sentiment} (gold: {devset[0].sentiment})")

        evaluate = dspy.Evaluate(devset=devset, metric=label_matches, num_threads=8)
        baseline = evaluate(classify)

        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            metric=label_matches,
            max_bootstrapped_demos=4,
            max_labeled_demos=4,
            num_candidate_programs=4,
            num_threads=8,
        )
        optimized = optimizer.compile(dspy.ChainOfThought(Sentiment), trainset=trainset)
        tuned = evaluate(optimized)
        print(f"Dev accuracy before: {baseline.score:.1f}")
        print(f"Dev accuracy after: {tuned.score:.1f}")

        # Save the state as JSON, rebuild the program the same way, and load it back.
        state_file = output_dir / "sentiment.json"
        optimized.save(str(state_file))
        reloaded = dspy.ChainOfThought(Sentiment)
        reloaded.load(str(state_file))

        # Save the whole program (architecture and state) and load it without rebuilding it.
        program_dir = output_dir / "sentiment_program"
        optimized.save(str(program_dir), save_program=True)
        whole = dspy.load(str(program_dir), allow_pickle=True)

        expected = labels(optimized, devset)
        from_json = labels(reloaded, devset)
        from_dir = labels(whole, devset)
        same_json = sum(a == b for a, b in zip(expected, from_json, strict=True))
        same_dir = sum(a == b for a, b in zip(expected, from_dir, strict=True))
        print(f"Loaded from JSON agrees: {same_json}/{len(devset)}")
        print(f"Loaded whole program agrees: {same_dir}/{len(devset)}")
        print(
            f"Demos kept: {len(optimized.predict.demos)} saved, {len(reloaded.predict.demos)} loaded"
        )


if __name__ == "__main__":
    main()
