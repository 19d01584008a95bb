"""A user's ProgramOfThought and CodeAct programs, run as a script (tool and metric in
``__main__``), on the runtime paths: Evaluate on EvalWorkers, a compile in a
coordinator, a served replica.

    python user_coder.py PHASE RUN_ID     # PHASE: evaluate, compile, serve

It attaches to RAY_ADDRESS and uses the simulated LM at SIM_LM_URL (which writes code for
arithmetic questions). The code runs in a sandbox started where the program runs.
"""

import json
import os
import sys

import dspex
from dspex.simlm import datasets

CALLS = {"multiply": 0}


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers."""
    CALLS["multiply"] += 1
    return a * b


def exact(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    return int(example.answer) == int(prediction.answer)


def examples(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[:n]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def report(**values: object) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def main() -> None:
    phase, run_id = sys.argv[1], sys.argv[2]
    dspex.init(address=os.environ.get("RAY_ADDRESS"))
    dspex.configure(lm=dspex.LM("openai/sim-coder", api_base=os.environ["SIM_LM_URL"], api_key="local", cache=False))
    try:
        run_phase(phase, run_id)
    finally:
        dspex.shutdown()


def run_phase(phase: str, run_id: str) -> None:
    trainset, devset = examples("train", 6), examples("dev", 8)
    if phase == "evaluate":
        result = dspex.Evaluate(devset=devset, metric=exact, num_threads=4)(dspex.ProgramOfThought("question -> answer: int"))
        report(score=result.score, n=len(result.results), errors=result.n_errors)
    elif phase == "compile":
        optimizer = dspex.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0)
        program = optimizer.compile(dspex.ProgramOfThought("question -> answer: int"), trainset=trainset, run_id=run_id)
        report(status=program.run_info.status,
               demos={name: len(p.demos) for name, p in program.named_predictors()},
               answer=program(question=devset[0].question).answer, gold=devset[0].answer)
    elif phase == "serve":
        agent = dspex.CodeAct("question -> answer: int", tools=[multiply])
        handle = dspex.serve(agent, name=f"coder-{run_id}", replicas=1)
        question = next(e for e in devset if "*" in e.question)
        answer = handle(question=question.question)
        called = any("multiply(" in v for k, v in answer.trajectory.items() if k.startswith("generated_code"))
        report(answer=answer.answer, gold=question.answer, called_tool=called, local_calls=CALLS["multiply"])


if __name__ == "__main__":
    main()
