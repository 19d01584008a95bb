"""Retrieval-augmented QA over the simulated LM's corpus: Retrieve + ChainOfThought,
evaluated, optimized, and evaluated again.

    python examples/rag.py                          # ColBERTv2 search served by the simulated LM
    python examples/rag.py --retriever embeddings   # an Embeddings index built over its corpus
    python examples/rag.py --optimizer mipro
    python examples/rag.py --runtime                # evaluate and optimize on the runtime
                                                    # (a local Ray, or --address / $RAY_ADDRESS)

The questions ask about the capitals, rulers, currencies and rivers of invented
kingdoms, so no model knows the answers: a program answers them well only by finding
the passage that states the answer. The simulated LM (started here on 127.0.0.1, no
key, no network) serves the corpus two ways: a ColBERTv2-compatible search endpoint,
and OpenAI-style /v1/embeddings to build a `dspex.retrievers.Embeddings` index with.
It answers more often right when the passage is in the context, and better still
with good demos, as a real model does.
"""

from __future__ import annotations

import argparse
import os

import dspex
from dspex.simlm import corpus, datasets, start_sim_lm


class RAG(dspex.Module):
    """Search for passages, then reason from them to an answer."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.retrieve = dspex.Retrieve(k=k)
        self.answer = dspex.ChainOfThought("context: list[str], question -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        context = self.retrieve(question).passages
        return self.answer(context=context, question=question)


def questions(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("facts", split)[:n]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]


def correct(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    return " ".join(str(prediction.answer).lower().split()) == example.answer.lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retriever", choices=("colbert", "embeddings"), default="colbert")
    parser.add_argument("--optimizer", choices=("bootstrap", "mipro"), default="bootstrap")
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--runtime", action="store_true", help="evaluate and optimize on the dspex runtime")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: a local one)")
    args = parser.parse_args()

    with start_sim_lm(seed=11) as sim:
        dspex.configure(lm=dspex.LM("openai/sim-rag", api_base=sim.url, api_key="local"))
        if args.retriever == "colbert":
            rm = dspex.ColBERTv2(url=f"{sim.base_url}/search")
        else:
            embedder = dspex.Embedder("openai/sim-embed", api_base=sim.url, api_key="local")
            rm = dspex.retrievers.Embeddings(corpus=[p.text for p in corpus.passages()], embedder=embedder, k=3)
        dspex.configure(rm=rm)
        print(f"retriever: {rm!r}")
        if args.runtime:
            dspex.init(address=args.address)
        try:
            run(args)
        finally:
            if args.runtime:
                dspex.shutdown()


def run(args: argparse.Namespace) -> None:
    trainset, devset = questions("train", args.train), questions("dev", args.dev)
    evaluate = dspex.Evaluate(devset=devset, metric=correct, num_threads=8)

    closed_book = evaluate(dspex.ChainOfThought("question -> answer"))
    print(f"closed book: {closed_book.score:.1f}")
    rag = RAG()
    before = evaluate(rag)
    print(f"rag before: {before.score:.1f}")

    if args.optimizer == "mipro":
        optimizer = dspex.MIPROv2(metric=correct, auto="light", num_threads=8)
        optimized = optimizer.compile(rag, trainset=trainset, valset=devset[: len(devset) // 2])
    else:
        optimizer = dspex.BootstrapFewShot(metric=correct, max_bootstrapped_demos=4, max_labeled_demos=4)
        optimized = optimizer.compile(rag, trainset=trainset)
    print(f"demos: {sum(len(p.demos) for p in optimized.predictors())}")

    after = evaluate(optimized)
    print(f"rag after: {after.score:.1f}")
    example = devset[0]
    answer = optimized(question=example.question)
    print(f"question: {example.question}")
    print(f"top passage: {optimized.retrieve(example.question).passages[0]}")
    print(f"answer: {answer.answer} (gold: {example.answer})")


if __name__ == "__main__":
    main()
