"""The simulated LM as a programmer, for `dspex.ProgramOfThought` and `dspex.CodeAct`.

A code step is a prompt whose outputs include ``generated_code``:

* ProgramOfThought's generate step (no ``error`` input) writes a program computing the
  arithmetic in the question; like a model in a hurry it sometimes misspells a
  variable (one time in five, decided by the request's seed), so the repair path runs;
* its regenerate step (given ``previous_code`` and ``error``) writes it correctly;
* CodeAct's step (outputs ``generated_code`` and ``finished``) calls a listed tool
  that fits the question (the same choice `agent` makes for ReAct) or computes the
  arithmetic, prints the result and says it is not finished; once the trajectory
  holds an output it prints that result again and finishes; after a failed run it
  writes the code again, correctly.

Questions can ask for the bad paths: one that says "forever" gets a loop that never
ends; one that says "unfixable" gets code that fails every time.

An answer step given ``code_output`` (ProgramOfThought) or a trajectory with
``code_output_N`` sections (CodeAct) answers with the last output, as a model reading
a computed result would.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from dspex.simlm import agent
from dspex.simlm.prompt import Field, ParsedPrompt

CODE_FIELD = "generated_code"
_CODE_OUTPUT_KEY = re.compile(r"^code_output_(\d+)$")
_OBSERVATION_KEY = re.compile(r"^observation_(\d+)$")
_TYPO_RATE = 0.2


def is_code_step(outputs: tuple[Field, ...]) -> bool:
    return any(f.name == CODE_FIELD for f in outputs)


def step_values(prompt: ParsedPrompt, rng: random.Random) -> dict[str, Any]:
    """The outputs of a code-writing step (``generated_code``, and ``finished`` for CodeAct)."""
    names = {f.name for f in prompt.system.outputs}
    question = agent.question_of(prompt.inputs)
    if "finished" in names:
        return _codeact_step(prompt, question, rng)
    repairing = bool(prompt.inputs.get("error", "").strip())
    code = _program(question, sloppy=not repairing and rng.random() < _TYPO_RATE)
    return {CODE_FIELD: _fenced(code)}


def answer_from_code(inputs: dict[str, str]) -> str | None:
    """What the code printed or returned, for the step that writes the final answer."""
    output = inputs.get("code_output")
    if output is None:
        outputs = sorted(
            (int(match.group(1)), value)
            for key, value in inputs.items()
            if (match := _CODE_OUTPUT_KEY.match(key)) is not None
        )
        output = outputs[-1][1] if outputs else None
    if output is None:
        return None
    text = output.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    try:
        value = json.loads(last)
    except json.JSONDecodeError:
        return last
    if value is None:
        return None
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    return value if isinstance(value, str) else json.dumps(value)


# --- writing code ----------------------------------------------------------------------


def _program(question: str, *, sloppy: bool) -> str:
    lowered = question.lower()
    if "forever" in lowered:
        return "steps = 0\nwhile True:\n    steps += 1"
    if "unfixable" in lowered:
        return "value = undefined_helper(3)\nvalue"
    expression = agent.expression_in(question)
    if expression is None:
        return f"result = {agent.subject_of(question)!r}\nresult"
    return f"result = {expression}\n" + ("print(reslt)" if sloppy else "print(result)") + "\nresult"


def _codeact_step(prompt: ParsedPrompt, question: str, rng: random.Random) -> dict[str, Any]:
    ran = _entries(prompt.inputs, _CODE_OUTPUT_KEY)
    failed = _entries(prompt.inputs, _OBSERVATION_KEY)
    if ran and (not failed or max(ran) > max(failed)):
        return {CODE_FIELD: _fenced("print(result)"), "finished": True}
    lowered = question.lower()
    if "forever" in lowered or "unfixable" in lowered:
        return {CODE_FIELD: _fenced(_program(question, sloppy=False)), "finished": False}
    picked = agent.pick_tool(question, agent.tool_schemas(prompt.system.instructions))
    if picked is not None:
        tool, arguments = picked
        call = f"{tool}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
    else:
        call = agent.expression_in(question) or repr(agent.subject_of(question))
    sloppy = not failed and rng.random() < _TYPO_RATE
    code = f"result = {call}\n" + ("print(reslt)" if sloppy else "print(result)")
    return {CODE_FIELD: _fenced(code), "finished": False}


def _entries(inputs: dict[str, str], pattern: re.Pattern[str]) -> list[int]:
    return [int(match.group(1)) for key in inputs if (match := pattern.match(key)) is not None]


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"
