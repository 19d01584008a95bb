"""A ReAct agent with two tools, evaluated and optimized on the runtime.

    python examples/react_agent.py                      # a local Ray started for the run
    python examples/react_agent.py --address 127.0.0.1:6380
    python examples/react_agent.py --optimizer mipro --lm openai/gpt-4o-mini

The agent answers arithmetic questions and questions about the kingdoms of a made-up
atlas, with a calculator and an atlas lookup. It is scored on EvalWorkers, optimized
with BootstrapFewShot (or MIPROv2) in a coordinator that fans its evaluations out to
the workers, and scored again; the tools travel with the program and run where the
agent runs. Without --lm it uses the simulated LM, started on 127.0.0.1.

How to give a tool something it must not carry in the pickled program (an API key, a
database connection): read it from the environment inside the tool, the first time
the tool runs in each process, and give the workers that environment through Ray's
runtime_env (``dspex.init(runtime_env={"env_vars": {...}})``). The tool object itself
travels by value, so whatever it holds as an attribute travels too.
"""

from __future__ import annotations

import argparse
import ast
import operator
import os

import dspex
from dspex.simlm import datasets, start_sim_lm

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression such as '12 * 7 - 3' (numbers and + - * / only)."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(f"not an arithmetic expression: {expression!r}")

    return value(ast.parse(expression, mode="eval").body)


_ATLAS: dict[str, list[str]] = {}
_TOPICS = ("capital", "river", "currency", "ruler", "rules")


def _atlas() -> dict[str, list[str]]:
    # Stands in for a database or an API the tool opens in the process it runs in, the
    # first time it runs there. (Not @functools.cache: a cached function of a script is
    # pickled by name, and a worker's __main__ does not have it.) Built aside and then
    # merged, so agents running in threads at once cannot fill it twice.
    if not _ATLAS:
        built: dict[str, list[str]] = {}
        for row in datasets.load("facts", "train") + datasets.load("facts", "dev"):
            kingdom = row["question"].rstrip("?").split()[-1]
            topic = next((t for t in _TOPICS if t in row["question"]), "note").replace("rules", "ruler")
            built.setdefault(kingdom, []).append(f"{topic}: {row['answer']}")
        _ATLAS.update(built)
    return _ATLAS


def kingdom_atlas(kingdom: str) -> str:
    """Look up a kingdom of the atlas by name: its capital, river, currency and ruler."""
    name = kingdom.split()[-1].strip("?.")
    found = _atlas().get(name)
    if found is None:
        return f"The atlas has no kingdom named {name!r}."
    return f"{name}: " + "; ".join(found)


def questions(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[: n // 2] + datasets.load("facts", split)[: n - n // 2]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]


def correct(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
    return str(prediction.answer).strip().lower().removesuffix(".0") == example.answer.lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: a local one)")
    parser.add_argument("--lm", default=None, help="model name, e.g. openai/gpt-4o-mini (default: the simulated LM)")
    parser.add_argument("--optimizer", choices=("bootstrap", "mipro"), default="bootstrap")
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--dev", type=int, default=60)
    args = parser.parse_args()

    with start_sim_lm(seed=7, latency_ms=10) as sim:
        lm = dspex.LM(args.lm) if args.lm else dspex.LM("openai/sim-agent", api_base=sim.url, api_key="local")
        dspex.configure(lm=lm)
        dspex.init(address=args.address)
        try:
            run(args)
        finally:
            dspex.shutdown()


def run(args: argparse.Namespace) -> None:
    trainset, devset = questions("train", args.train), questions("dev", args.dev)
    agent = dspex.ReAct("question -> answer", tools=[calculate, kingdom_atlas], max_iters=4)
    evaluate = dspex.Evaluate(devset=devset, metric=correct, num_threads=8)

    before = evaluate(agent)
    print(f"before: {before.score:.1f}% on {len(devset)} dev questions")

    if args.optimizer == "mipro":
        optimizer = dspex.MIPROv2(metric=correct, auto="light", num_threads=8)
        optimized = optimizer.compile(agent, trainset=trainset, valset=devset[: len(devset) // 2])
    else:
        optimizer = dspex.BootstrapFewShot(metric=correct, max_bootstrapped_demos=4, max_labeled_demos=4)
        optimized = optimizer.compile(agent, trainset=trainset)
    demos = {name: len(p.demos) for name, p in optimized.named_predictors()}
    print(f"demos per predictor: {demos}")

    after = evaluate(optimized)
    print(f"after:  {after.score:.1f}% on {len(devset)} dev questions")
    answer = optimized(question=devset[0].question)
    steps = [v for k, v in answer.trajectory.items() if k.startswith("tool_name")]
    print(f"example: {devset[0].question} -> {answer.answer} (tools: {', '.join(steps)})")


if __name__ == "__main__":
    main()
