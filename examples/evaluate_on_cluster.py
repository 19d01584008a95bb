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
from dspex.simlm import datasets, start_sim_lm


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
    # Say what each wait is for: connecting, and starting the workers, take seconds
    # before the progress bar's first step.
    print(f"connecting to the Ray cluster at {args.address or 'a new local Ray'} ...", flush=True)
    dspex.init(address=args.address)
    try:
        print(f"connected: {_cluster_size()}; starting the simulated LM", flush=True)
        with start_sim_lm(seed=0, latency_ms=100) as server:
            lm = dspex.LM("openai/sim-1", api_base=server.url, api_key="local", cache=False)
            with dspex.context(lm=lm):
                evaluator = dspex.Evaluate(
                    devset=devset,
                    metric=dspex.answer_exact_match,
                    num_threads=args.concurrency,
                    display_progress=True,
                )
                print("starting evaluation workers on the nodes (the bar moves once they are up)",
                      flush=True)
                result = evaluator(dspex.ChainOfThought("question -> answer: int"))
        print(f"score {result.score:.1f}% over {len(result.results)} examples, {result.n_errors} errors, "
              f"{result.elapsed:.1f} s")
    finally:
        dspex.shutdown()


def _cluster_size() -> str:
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    cpus = sum(node.get("Resources", {}).get("CPU", 0) for node in nodes)
    return f"{len(nodes)} node(s), {cpus:g} CPU(s)"


if __name__ == "__main__":
    main()
