"""What the oracle knows about each task: how hard it is, which instruction
ideas help, how it answers wrongly and how it explains an answer.

The key ideas are the hidden "good prompt" of each task. An instruction's
quality is the fraction of idea groups it mentions (any phrase of a group
counts). The instruction bank an optimizer's proposer draws from mixes 0 to all
ideas, so proposing several candidates and keeping the best really pays off.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dspex.simlm import datasets


@dataclass(frozen=True, slots=True)
class Idea:
    """A key idea: phrases that count as mentioning it, and sentences that state it."""

    keywords: tuple[str, ...]
    sentences: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskProfile:
    base: float
    reasoning_gain: float
    description: str
    ideas: tuple[Idea, ...]


_FILLERS = (
    "Answer the question.",
    "Read the input and respond.",
    "Use the input fields to produce the output fields.",
    "Respond to the question given.",
)

PROFILES: dict[str, TaskProfile] = {
    "arithmetic": TaskProfile(
        base=0.36,
        reasoning_gain=0.10,
        description="arithmetic word questions that add, subtract or multiply two whole numbers",
        ideas=(
            Idea(
                ("step by step", "step-by-step"),
                ("Work through the problem step by step.", "Reason step by step before answering."),
            ),
            Idea(
                ("carefully", "double-check", "double check", "verify"),
                ("Double-check every operation.", "Carefully verify the result."),
            ),
            Idea(
                ("integer", "number only", "only the number"),
                ("Give the final answer as an integer.", "Reply with the number only."),
            ),
            Idea(
                ("compute", "calculate"),
                ("Compute the exact value of the expression.", "Calculate the result precisely."),
            ),
        ),
    ),
    "facts": TaskProfile(
        base=0.40,
        reasoning_gain=0.05,
        description="questions about the capitals, rulers, currencies and rivers of invented kingdoms",
        ideas=(
            Idea(
                ("recall", "look up", "lookup"),
                (
                    "Recall the stored fact being asked for.",
                    "Look up the requested fact from memory.",
                ),
            ),
            Idea(
                ("exact name", "exactly as", "spelled"),
                (
                    "Give the exact name, spelled as recorded.",
                    "Write the name exactly as it is known.",
                ),
            ),
            Idea(
                ("kingdom",),
                (
                    "Identify which kingdom the question is about.",
                    "Focus on the kingdom in the question.",
                ),
            ),
            Idea(
                ("concise", "nothing else", "no extra words"),
                ("Be concise and say nothing else.", "Answer with no extra words."),
            ),
        ),
    ),
    "sentiment": TaskProfile(
        base=0.45,
        reasoning_gain=0.06,
        description="product reviews to classify as positive, negative or neutral",
        ideas=(
            Idea(
                ("tone", "feeling"),
                (
                    "Judge the overall tone of the review.",
                    "Consider the feeling the reviewer expresses.",
                ),
            ),
            Idea(
                ("neutral", "neither"),
                (
                    "Use neutral when the review is neither good nor bad.",
                    "Choose neutral for plain, factual reviews.",
                ),
            ),
            Idea(
                ("every sentence", "whole review", "both sentences"),
                ("Read the whole review before deciding.", "Weigh every sentence of the review."),
            ),
            Idea(
                ("one label", "single label", "exactly one"),
                ("Reply with exactly one label.", "Output a single label."),
            ),
        ),
    ),
}

# The mix of how many key ideas a proposed instruction carries (0..4).
_IDEA_COUNT_WEIGHTS = (0.15, 0.30, 0.30, 0.17, 0.08)


def profile(task: str) -> TaskProfile:
    return PROFILES[task]


@lru_cache(maxsize=4096)
def instruction_quality(task: str, instructions: str) -> float:
    """Fraction of the task's key ideas the instructions mention, in [0, 1]."""
    text = instructions.lower()
    ideas = PROFILES[task].ideas
    hit = sum(1 for idea in ideas if any(k in text for k in idea.keywords))
    return hit / len(ideas)


def propose_instruction(task: str | None, rng: random.Random) -> str:
    """An instruction candidate with a random number of the task's key ideas."""
    if task is None:
        return f"{rng.choice(_FILLERS)} Be clear and precise."
    ideas = list(PROFILES[task].ideas)
    count = rng.choices(range(len(_IDEA_COUNT_WEIGHTS)), weights=_IDEA_COUNT_WEIGHTS)[0]
    chosen = rng.sample(ideas, count)
    parts = [rng.choice(_FILLERS)] + [rng.choice(idea.sentences) for idea in chosen]
    return " ".join(parts)


def describe(task: str | None) -> str:
    """A short sentence about the task, for summary/description-style fields."""
    if task is None:
        return "The inputs are general requests; each expects a short, direct response."
    return f"The examples are {PROFILES[task].description}; each has one short exact answer."


def wrong_answer(record: datasets.Record, rng: random.Random) -> Any:
    """A plausible wrong answer for the record's question."""
    if record.task == "arithmetic":
        delta = rng.choice([-10, -2, -1, 1, 2, 10])
        return int(record.answer) + delta
    if record.task == "sentiment":
        return rng.choice([x for x in ("positive", "negative", "neutral") if x != record.answer])
    pool = _same_kind_answers(record.task, _template(record.question))
    choices = [a for a in pool if a != record.answer]
    return rng.choice(choices) if choices else f"{record.answer}?"


def explain(record: datasets.Record, answer: Any) -> str:
    """Reasoning text that leads to `answer` (right or wrong)."""
    if record.task == "arithmetic":
        expr = record.question.removeprefix("What is ").rstrip("?")
        return f"We need to evaluate {expr}. Working it out step by step, {expr} = {answer}."
    if record.task == "sentiment":
        return f"Reading the review as a whole, its tone comes across as {answer}, so the label is {answer}."
    kingdom = _KINGDOM.search(record.question)
    place = kingdom.group(0) if kingdom else "the kingdom"
    return f"The question asks about {place}. From what is known about it, the answer is {answer}."


_KINGDOM = re.compile(r"the kingdom of [A-Z][a-z]+")


def _template(question: str) -> str:
    return _KINGDOM.sub("the kingdom of _", question)


@lru_cache(maxsize=64)
def _same_kind_answers(task: str, template: str) -> tuple[Any, ...]:
    return tuple(
        sorted(
            {r.answer for r in datasets.records(task) if _template(r.question) == template}, key=str
        )
    )
