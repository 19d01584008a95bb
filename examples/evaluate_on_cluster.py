"""Scale an evaluation over a Ray cluster's nodes.

With the runtime up, dspex.Evaluate hands examples out in small chunks to
EvalWorker actors spread over the nodes; a worker or node that dies only
delays its own chunk, and every example is scored exactly once.

    dspex cluster start --workers 2
    python examples/evaluate_on_cluster.py --address 127.0.0.1:6380 --size 2000
"""

from __future__ import annotations

import argparse
import os

import dspex
from dspex.providers.simlm import datasets, start_sim_lm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"))
    parser.add_argument("--size", type=int, default=1000, help="examples to evaluate")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    rows = datasets.load("arithmetic", "train") + datasets.load("arithmetic", "dev")
    devset = [
        dspex.Example(question=rows[i % len(rows)]["question"], answer=rows[i % len(rows)]["answer"]).with_inputs(
            "question"
        )
        for i in range(args.size)
    ]
    dspex.init(address=args.address)
    try:
        with start_sim_lm(seed=0, latency_ms=100) as server:
            lm = dspex.LM("openai/sim-1", api_base=server.url, api_key="local", cache=False)
            with dspex.context(lm=lm):
                evaluator = dspex.Evaluate(
                    devset=devset,
                    metric=dspex.answer_exact_match,
                    num_threads=args.concurrency,
                    display_progress=True,
                )
                result = evaluator(dspex.ChainOfThought("question -> answer: int"))
        print(f"score {result.score:.1f}% over {len(result.results)} examples, {result.n_errors} errors, "
              f"{result.elapsed:.1f} s")
    finally:
        dspex.shutdown()


if __name__ == "__main__":
    main()
