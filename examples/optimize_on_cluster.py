"""Optimize a program on a running Ray cluster.

Start a cluster (or use yours), then run this driver, or submit it as a job:

    dspex cluster start --workers 2          # prints the address
    python examples/optimize_on_cluster.py --address 127.0.0.1:6380
    dspex submit examples/optimize_on_cluster.py --address http://127.0.0.1:8265 --working-dir .

Without --lm it starts the simulated LM on the driver's machine, so it needs no
API key (it listens on 127.0.0.1: nodes on other machines need --lm). The run is
checkpointed in the run store: rerun with --run-id to resume.

The optimized program is stored with the run, so it is there wherever the driver
ran: `dspex runs show RUN_ID --save program.json` writes it to a file. (A file
the script itself writes, --output, lands in the job's working directory on the
cluster when the script runs as a job.)
"""

from __future__ import annotations

import argparse
import os

import pydantic

import dspex
from dspex.optimizers import BootstrapFewShot
from dspex.simlm import datasets, start_sim_lm


# Written the way a DSPy program is: its classes live in this script (__main__), and
# Ray ships them by value to the coordinator and the workers on every node.
class Working(pydantic.BaseModel):
    operation: str
    steps: list[str]


class Solve(dspex.Signature):
    """Answer the arithmetic question with a whole number."""

    question: str = dspex.InputField()
    working: Working = dspex.OutputField(desc="how the answer was found")
    answer: int = dspex.OutputField()


class Solver(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.solve = dspex.ChainOfThought(Solve)

    def forward(self, question: str) -> dspex.Prediction:
        return self.solve(question=question)


def same_number(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    return int(example.answer) == prediction.answer


def examples(split: str) -> list[dspex.Example]:
    return [
        dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question")
        for r in datasets.load("arithmetic", split)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("--lm", default=None, help="e.g. openai/gpt-4o-mini (default: the simulated LM)")
    parser.add_argument("--run-id", default=None, help="resume this run instead of starting a new one")
    parser.add_argument("--output", default=None, help="also save the program to this JSON file")
    args = parser.parse_args()

    dspex.init(address=args.address)
    server = None
    try:
        if args.lm is None:
            server = start_sim_lm(seed=0, latency_ms=50)
            lm = dspex.LM("openai/sim-1", api_base=server.url, api_key="local", cache=False)
        else:
            lm = dspex.LM(args.lm)
        dspex.configure(lm=lm)
        optimizer = BootstrapFewShot(metric=same_number, max_bootstrapped_demos=4)
        compiled = optimizer.compile(Solver(), trainset=examples("train"), run_id=args.run_id)
        score = dspex.Evaluate(devset=examples("dev")[:100], metric=same_number)(compiled)
        run_id = compiled.run_info.run_id
        print(f"run {run_id}: dev score {score.score:.1f}%")
        print(f"get the program with: dspex runs show {run_id} --save optimized_program.json")
        if args.output:
            compiled.save(args.output)
    finally:
        if server is not None:
            server.stop()
        dspex.shutdown()


if __name__ == "__main__":
    main()
