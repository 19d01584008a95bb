"""A DSPy-style program written the way users write one: every class in __main__.

    python user_program.py PHASE RUN_ID     # PHASE: evaluate, compile, resume, serve, job

It attaches to RAY_ADDRESS (a submitted job's is set by Ray) and uses the simulated LM
at SIM_LM_URL, or starts one itself when none is given.
"""

import contextlib
import json
import os
import sys

import pydantic

import dspex
from dspex.optimizers import BootstrapFewShotWithRandomSearch
from dspex.simlm import datasets, start_sim_lm


class Verdict(pydantic.BaseModel):
    answer: int
    confident: bool


class Solve(dspex.Signature):
    """Solve the arithmetic question."""

    question: str = dspex.InputField()
    answer: int = dspex.OutputField()


class Check(dspex.Signature):
    """Check a proposed answer to the question."""

    question: str = dspex.InputField()
    proposed: int = dspex.InputField()
    verdict: Verdict = dspex.OutputField()


class SolveAndCheck(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.solve = dspex.ChainOfThought(Solve)
        self.check = dspex.Predict(Check)

    def forward(self, question: str) -> dspex.Prediction:
        solved = self.solve(question=question)
        checked = self.check(question=question, proposed=solved.answer)
        return dspex.Prediction(answer=solved.answer, verdict=checked.verdict)


def right_and_checked(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    # isinstance holds only if Verdict reached the worker as the same class the program uses.
    return isinstance(prediction.verdict, Verdict) and int(example.answer) == int(prediction.answer)


def examples(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[:n]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def report(**values: object) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def main() -> None:
    phase, run_id = sys.argv[1], sys.argv[2]
    with contextlib.ExitStack() as stack:
        url = os.environ.get("SIM_LM_URL") or stack.enter_context(start_sim_lm(seed=3, latency_ms=20)).url
        dspex.init(address=os.environ.get("RAY_ADDRESS"))
        lm = dspex.LM("openai/sim-1", api_base=url, api_key="local", cache=False)
        dspex.configure(lm=lm)
        run_phase(phase, run_id)


def run_phase(phase: str, run_id: str) -> None:
    optimizer = BootstrapFewShotWithRandomSearch(
        metric=right_and_checked, max_bootstrapped_demos=2, num_candidate_programs=4, num_threads=2
    )
    trainset, valset = examples("train", 12), examples("dev", 16)
    try:
        if phase in ("evaluate", "job"):
            evaluate = dspex.Evaluate(devset=valset, metric=right_and_checked, num_threads=8)
            result = evaluate(SolveAndCheck())
            report(phase=phase, score=result.score, n=len(result.results), errors=result.n_errors)
        if phase in ("compile", "resume", "job"):
            program = optimizer.compile(SolveAndCheck(), trainset=trainset, valset=valset, run_id=run_id)
            answer = program(question=valset[0].question)
            report(
                phase=phase,
                status=program.run_info.status,
                demos={name: len(p.demos) for name, p in program.named_predictors()},
                state=program.dump_state(),
                verdict_type=type(answer.verdict).__name__,
            )
        elif phase == "serve":
            handle = dspex.serve(SolveAndCheck(), name=f"user-{run_id}", replicas=1)
            answer = handle(question=valset[0].question)
            report(phase=phase, answer=answer.answer, verdict=type(answer.verdict).__name__)
    finally:
        dspex.shutdown()


if __name__ == "__main__":
    main()
