"""GEPA from a driver script on a Ray cluster: reflective prompt evolution in a supervised
coordinator, its evaluations on the EvalWorkers.

    python examples/gepa_on_cluster.py                    # a local Ray started for the run
    python examples/gepa_on_cluster.py --address 127.0.0.1:6380 --run-id my-gepa
    python examples/gepa_on_cluster.py --lm openai/gpt-4o-mini --reflection-lm openai/gpt-4o

Without --lm it uses the simulated LM, started on 127.0.0.1 (nodes on other machines need
--lm). The metric gives feedback with its score, which GEPA's reflection step reads. The
run is durable: if the coordinator dies, its supervisor restarts it and the run resumes
from its last finished iteration; rerun with the same --run-id to pick up a run whose
driver stopped. `dspex runs show RUN_ID` lists its candidates and scores.
"""

from __future__ import annotations

import argparse
import os

import dspex
from dspex.simlm import datasets, start_sim_lm


def examples(split: str, start: int, stop: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[start:stop]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def correct(gold: dspex.Example, pred: dspex.Prediction) -> bool:
    try:
        return int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        return False


def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):  # type: ignore[no-untyped-def]
    """A score and what was wrong: GEPA's reflection step learns from the feedback."""
    if correct(gold, pred):
        return dspex.Prediction(score=1.0, feedback="Correct.")
    return dspex.Prediction(
        score=0.0, feedback=f"Wrong: the answer is {gold.answer}. Work step by step and double-check every operation."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: a local one)")
    parser.add_argument("--lm", default=None, help="task model (default: the simulated LM)")
    parser.add_argument("--reflection-lm", default=None, help="reflection model (default: the task model)")
    parser.add_argument("--run-id", default=None, help="name the run to resume it later")
    args = parser.parse_args()

    with start_sim_lm(seed=0, latency_ms=10) as sim:
        lm = dspex.LM(args.lm) if args.lm else dspex.LM("openai/sim-gepa", api_base=sim.url, api_key="local")
        reflection = dspex.LM(args.reflection_lm) if args.reflection_lm else lm
        dspex.configure(lm=lm)
        dspex.init(address=args.address)
        try:
            program = dspex.ChainOfThought("question -> answer: int")
            dev = examples("dev", 0, 100)
            evaluate = dspex.Evaluate(devset=dev, metric=lambda g, p, t=None: correct(g, p), num_threads=16)
            print(f"before: {evaluate(program).score:.1f}% on {len(dev)} dev questions")
            gepa = dspex.GEPA(metric=metric, auto="light", reflection_lm=reflection, track_stats=True)
            optimized = gepa.compile(program, trainset=examples("train", 0, 30), valset=examples("train", 30, 60),
                                     run_id=args.run_id)
            results = optimized.detailed_results
            print(f"run {optimized.run_info.run_id}: {len(results.candidates)} candidates, "
                  f"{results.total_metric_calls} metric calls, status {optimized.run_info.status}")
            print(f"after:  {evaluate(optimized).score:.1f}% on {len(dev)} dev questions")
            print(f"instruction: {optimized.predict.signature.instructions}")
        finally:
            dspex.shutdown()


if __name__ == "__main__":
    main()
