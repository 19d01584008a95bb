"""Retrieval-augmented QA, written as a DSPy program: only the import names dspex.

A tiny corpus about invented kingdoms lives in this file, a word-overlap
retriever picks passages for each question, and a ChainOfThought module answers
from them. We score it on a dev set, compile it with BootstrapFewShot, and score
it again.

    python examples/dspy_rag.py                          # starts the simulated LM itself
    python examples/dspy_rag.py --api-base http://127.0.0.1:8000/v1 --model openai/sim-1

With no --api-base (nor LM_API_BASE in the environment) the script starts dspex's
simulated LM on 127.0.0.1, so it needs no key and no network. The simulated LM
reads the context: with the passage that states the answer in it, it answers
more often right (and better still with good demos), as a real model does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
from collections.abc import Iterator

import dspex as dspy

# --- The corpus: one passage per kingdom, plus a few that answer nothing. ----------

CORPUS = [
    "Ulmemoor lies in the western marshes. Its court sits at Vararstead, where King Rodric "
    "the Bold has reigned for twenty winters; the Ithewater winds past the city walls and "
    "merchants there count their coins in ithenmark.",
    "The highland realm of Yoriholt is governed from Jorton by Queen Isadra IV. Trade is "
    "settled in joraflorin, and barges carry timber down the Draenwater.",
    "Telenwick, the capital of Zanenmark, stands on a bend of the Varerun. King Wystan the "
    "Younger minted the yorenobol, still the coin of the kingdom.",
    "Lumahaven is the seat of King Ulric II of Yorarholt. The yoroobol is its currency and "
    "the Zanobrook waters its orchards.",
    "Belemoor's ruler, King Hollis the Younger, keeps his palace in Thalaby. The Nexarbrook "
    "runs through the valley, and prices are quoted in kyrarcrown.",
    "In Hulimoor the capital is Fenarwick. King Dathen II rules there; the Ulmowater feeds "
    "its mills and the yorenflorin is the coin of every market.",
    "Nexofell, a kingdom of cliffs and mist, answers to Queen Maelis II from Quoremere. The "
    "Quorerun cuts through its gorges; its people pay in hulilflorin.",
    "Ostarford is the capital of Beloria, whose king is Fariq the Younger (King Fariq the "
    "Younger to his subjects). The galedrassil is its money and the Jorowater its river.",
    "Lumiloria trades in lumilcrown. King Corvan III holds court at Syloport, and the "
    "Ulmiwater flows through the kingdom from the northern lakes.",
    "Queen Vesna the Younger rules Yorstan from the city of Feniby. The Zanowash crosses the "
    "kingdom and the thalamark is its coin.",
    "Hulengard's capital, Eldimere, is home to Queen Isadra III. The Itharrun passes through "
    "the kingdom, whose currency is the nexilmark.",
    "Wynmoor is ruled by Queen Maelis IV from Skelilhaven. The Sylarun is its great river and "
    "the nexilobol its currency.",
    "Brekestan's capital is Ithford and its sovereign is Queen Maelis the Elder. The Brekwash "
    "runs along its border; the casodrassil is accepted everywhere in the kingdom.",
    "King Corvan the Elder governs Fenilwyn from Fenaton. The Yorerun flows through its "
    "farmland and merchants there trade in vartallin.",
    # Distractors: plausible passages that answer none of the questions.
    "Travellers say the roads between the kingdoms are safest in late summer, when the "
    "rivers run low and the fords can be crossed on foot.",
    "Many kingdoms of the region strike coins from silver mined in the eastern hills, though "
    "each gives its currency a name of its own.",
    "A capital city is usually chosen for its harbour or its river crossing; several courts "
    "have moved more than once over the centuries.",
]

# The facts the questions ask about (the passages above state them in prose).
FACTS = {
    "Ulmemoor": ("Vararstead", "King Rodric the Bold", "ithenmark", "the Ithewater"),
    "Yoriholt": ("Jorton", "Queen Isadra IV", "joraflorin", "the Draenwater"),
    "Zanenmark": ("Telenwick", "King Wystan the Younger", "yorenobol", "the Varerun"),
    "Yorarholt": ("Lumahaven", "King Ulric II", "yoroobol", "the Zanobrook"),
    "Belemoor": ("Thalaby", "King Hollis the Younger", "kyrarcrown", "the Nexarbrook"),
    "Hulimoor": ("Fenarwick", "King Dathen II", "yorenflorin", "the Ulmowater"),
    "Nexofell": ("Quoremere", "Queen Maelis II", "hulilflorin", "the Quorerun"),
    "Beloria": ("Ostarford", "King Fariq the Younger", "galedrassil", "the Jorowater"),
    "Lumiloria": ("Syloport", "King Corvan III", "lumilcrown", "the Ulmiwater"),
    "Yorstan": ("Feniby", "Queen Vesna the Younger", "thalamark", "the Zanowash"),
    "Hulengard": ("Eldimere", "Queen Isadra III", "nexilmark", "the Itharrun"),
    "Wynmoor": ("Skelilhaven", "Queen Maelis IV", "nexilobol", "the Sylarun"),
    "Brekestan": ("Ithford", "Queen Maelis the Elder", "casodrassil", "the Brekwash"),
    "Fenilwyn": ("Fenaton", "King Corvan the Elder", "vartallin", "the Yorerun"),
}

QUESTIONS = (
    "What is the capital of the kingdom of {}?",
    "Who rules the kingdom of {}?",
    "What currency is used in the kingdom of {}?",
    "Which river flows through the kingdom of {}?",
)


def make_examples() -> tuple[list[dspy.Example], list[dspy.Example]]:
    data = [
        dspy.Example(question=template.format(kingdom), answer=answer).with_inputs("question")
        for kingdom, answers in FACTS.items()
        for template, answer in zip(QUESTIONS, answers, strict=True)
    ]
    random.Random(0).shuffle(data)
    return data[:20], data[20:]  # 20 to compile on, 36 to score on


# --- Retrieval: score passages by the words they share with the question. ----------

STOPWORDS = {"the", "of", "is", "in", "a", "what", "who", "which", "through", "used", "its"}


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


INDEX = [(passage, words(passage)) for passage in CORPUS]


def search(query: str, k: int = 3) -> list[str]:
    query_words = words(query)
    ranked = sorted(INDEX, key=lambda entry: len(query_words & entry[1]), reverse=True)
    return [passage for passage, _ in ranked[:k]]


# --- The program. ------------------------------------------------------------------


class GenerateAnswer(dspy.Signature):
    """Answer the question using the context passages; give just the name asked for."""

    context: list[str] = dspy.InputField(desc="passages that may contain the answer")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a short answer, often a single name")


class RAG(dspy.Module):
    def __init__(self, num_passages: int = 3):
        self.num_passages = num_passages
        self.generate_answer = dspy.ChainOfThought(GenerateAnswer)

    def forward(self, question: str):
        context = search(question, k=self.num_passages)
        prediction = self.generate_answer(context=context, question=question)
        return dspy.Prediction(context=context, answer=prediction.answer)


def answer_matches(example, pred, trace=None) -> bool:
    return example.answer.strip().lower() == pred.answer.strip().lower()


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
    args = parser.parse_args()

    trainset, devset = make_examples()
    with language_model(args.api_base, args.model) as lm:
        dspy.configure(lm=lm)

        rag = RAG()
        example = devset[0]
        pred = rag(question=example.question)
        print(f"Question: {example.question}")
        print(f"Top passage: {pred.context[0]}")
        print(f"Predicted answer: {pred.answer} (gold: {example.answer})")

        evaluate = dspy.Evaluate(
            devset=devset, metric=answer_matches, num_threads=8, display_progress=False
        )
        baseline = evaluate(rag)

        optimizer = dspy.BootstrapFewShot(
            metric=answer_matches, max_bootstrapped_demos=4, max_labeled_demos=4
        )
        compiled_rag = optimizer.compile(RAG(), trainset=trainset)
        optimized = evaluate(compiled_rag)

        demos = sum(len(predictor.demos) for predictor in compiled_rag.predictors())
        print(f"Demos in the compiled program: {demos}")
        print(f"Dev score before: {baseline.score:.1f}")
        print(f"Dev score after: {optimized.score:.1f}")


if __name__ == "__main__":
    main()
