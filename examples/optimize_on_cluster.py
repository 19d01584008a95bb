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

import dspex
from dspex.optimizers import BootstrapFewShot
from dspex.providers.simlm import datasets, start_sim_lm


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
        program = dspex.ChainOfThought("question -> answer: int")
        optimizer = BootstrapFewShot(metric=dspex.answer_exact_match, max_bootstrapped_demos=4)
        compiled = optimizer.compile(program, trainset=examples("train"), run_id=args.run_id)
        score = dspex.Evaluate(devset=examples("dev")[:100], metric=dspex.answer_exact_match)(compiled)
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
