"""A DSPy-style agent written the way users write one: its tools and metric in __main__.

    python user_agent.py PHASE RUN_ID     # PHASE: evaluate, batch, compile, serve, served_tool

It attaches to RAY_ADDRESS and uses the simulated LM at SIM_LM_URL (which plays an
agent: it calls a listed calculator tool for arithmetic questions, then finishes).
"""

import ast
import contextlib
import json
import operator
import os
import sys

import dspex
from dspex.simlm import datasets, start_sim_lm

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
CALLS = {"calculate": 0}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression such as '3 + 4 * 2' (numbers and + - * / only)."""
    CALLS["calculate"] += 1

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(f"not an arithmetic expression: {expression!r}")

    return value(ast.parse(expression, mode="eval").body)


def lookup(topic: str) -> str:
    """Look up a one-line note about a topic."""
    return f"No note about {topic}."


def exact(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    return int(example.answer) == int(prediction.answer)


def examples(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[:n]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def agent() -> dspex.ReAct:
    return dspex.ReAct("question -> answer: int", tools=[calculate, lookup], max_iters=4)


def used_calculator(prediction: dspex.Prediction) -> bool:
    return any(v == "calculate" for k, v in prediction.trajectory.items() if k.startswith("tool_name"))


class ServedCalculator:
    """A tool that is itself expensive (a model, a connection): served from supervised
    replicas, and given to the agent as a Tool over the service's handle."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __call__(self, expression: str) -> float:
        return calculate(expression)


def report(**values: object) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def main() -> None:
    phase, run_id = sys.argv[1], sys.argv[2]
    with contextlib.ExitStack() as stack:
        url = os.environ.get("SIM_LM_URL") or stack.enter_context(start_sim_lm(seed=3, latency_ms=20)).url
        dspex.init(address=os.environ.get("RAY_ADDRESS"))
        dspex.configure(lm=dspex.LM("openai/sim-1", api_base=url, api_key="local", cache=False))
        try:
            run_phase(phase, run_id)
        finally:
            dspex.shutdown()


def run_phase(phase: str, run_id: str) -> None:
    trainset, devset = examples("train", 8), examples("dev", 12)
    if phase == "evaluate":
        result = dspex.Evaluate(devset=devset, metric=exact, num_threads=6)(agent())
        tools = [used_calculator(prediction) for _, prediction, _ in result.results]
        report(score=result.score, n=len(result.results), errors=result.n_errors, used_tool=sum(tools))
    elif phase == "batch":
        predictions = agent().batch(devset, num_threads=6)
        report(n=len(predictions), answered=sum(p is not None for p in predictions),
               used_tool=sum(used_calculator(p) for p in predictions if p is not None),
               local_tool_calls=CALLS["calculate"])
    elif phase == "compile":
        optimizer = dspex.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0)
        program = optimizer.compile(agent(), trainset=trainset, run_id=run_id)
        answer = program(question=devset[0].question)
        report(status=program.run_info.status,
               demos={name: len(p.demos) for name, p in program.named_predictors()},
               answer=answer.answer)
    elif phase == "served_tool":
        handle = dspex.serve(ServedCalculator(), name=f"calc-{run_id}", replicas=1)
        tool = dspex.Tool(handle, name="calculate", desc="Evaluate an arithmetic expression.",
                          args={"expression": {"type": "string"}})
        program = dspex.ReAct("question -> answer: int", tools=[tool], max_iters=4)
        result = dspex.Evaluate(devset=devset, metric=exact, num_threads=6)(program)
        observed = [p.trajectory.get("observation_0") for _, p, _ in result.results]
        report(n=len(result.results), errors=result.n_errors,
               observed_gold=sum(o == e.answer for o, (e, _, _) in zip(observed, result.results, strict=True)),
               local_tool_calls=CALLS["calculate"])
    elif phase == "serve":
        handle = dspex.serve(agent(), name=f"agent-{run_id}", replicas=1)
        answer = handle(question=devset[0].question)
        report(answer=answer.answer, used_tool=used_calculator(answer), gold=devset[0].answer)


if __name__ == "__main__":
    main()
