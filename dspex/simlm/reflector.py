"""The simulated LM as GEPA's reflection model: it rewrites a step's instruction from
examples of the step's work and the feedback on each.

A reflection prompt asks for ``new_instruction`` given ``current_instruction`` and
``examples_with_feedback``. The rewrite keeps every key idea of the task the current
instruction already states, adds each idea the feedback names (any of its keywords in
the feedback text, as a metric that says "check your arithmetic" names the
double-checking idea), and when the feedback names none it tries one more idea at
random, as a model guessing what would help. So feedback that says what is missing
lifts an instruction in one step, and bare scores lift it by trial and error.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from dspex.simlm import datasets, tasks
from dspex.simlm.prompt import Field, ParsedPrompt

NEW_INSTRUCTION = "new_instruction"
_GUESS_RATE = 0.6
_JSON_FEEDBACK = re.compile(r'"feedback"\s*:\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_FENCED = re.compile(r"```[a-z]*\n?(.*?)```", re.DOTALL)


def is_reflection_step(outputs: tuple[Field, ...], inputs: dict[str, str]) -> bool:
    return any(f.name == NEW_INSTRUCTION for f in outputs) and "current_instruction" in inputs


def reflect(prompt: ParsedPrompt, rng: random.Random) -> dict[str, Any]:
    current = prompt.inputs.get("current_instruction", "").strip()
    evidence = prompt.inputs.get("examples_with_feedback", "")
    return {NEW_INSTRUCTION: rewrite(current, evidence, rng)}


def is_plain_reflection(text: str) -> bool:
    """A reflection asked in prose (the `gepa` package's prompt, which DSPy's GEPA sends):
    fenced blocks holding the current instruction and the examples, asking for a new
    instruction."""
    lowered = text.lower()
    return "new instruction" in lowered and lowered.count("```") >= 4 and "feedback" in lowered


def plain_reflection(text: str, rng: random.Random) -> str:
    blocks = _FENCED.findall(text)
    current = blocks[0].strip() if blocks else ""
    evidence = blocks[1] if len(blocks) > 1 else text
    return f"```\n{rewrite(current, evidence, rng)}\n```"


def rewrite(current: str, evidence: str, rng: random.Random) -> str:
    """The rewritten instruction (see the module docstring)."""
    task = datasets.detect_task([evidence, current])
    if task is None:
        return current or "Answer the question."
    ideas = tasks.profile(task).ideas
    lowered_current, lowered_feedback = current.lower(), _feedback_text(evidence).lower()
    kept = [idea for idea in ideas if any(k in lowered_current for k in idea.keywords)]
    named = [idea for idea in ideas if idea not in kept and any(k in lowered_feedback for k in idea.keywords)]
    added = named
    if not named:
        missing = [idea for idea in ideas if idea not in kept]
        if missing and rng.random() < _GUESS_RATE:
            added = [rng.choice(missing)]
    sentences = [current] if current else ["Answer the question."]
    sentences += [rng.choice(idea.sentences) for idea in added]
    return " ".join(sentences)


def _feedback_text(evidence: str) -> str:
    """What the metric said about the examples, not their inputs or outputs: ``Feedback:``
    lines, the text under a markdown heading that names feedback, and the ``"Feedback"``
    values of examples written as JSON."""
    kept: list[str] = [match.group(1) for match in _JSON_FEEDBACK.finditer(evidence)]  # examples as JSON
    under_feedback = False
    for line in evidence.splitlines():
        stripped = line.strip().lower()
        if stripped.startswith("#"):
            under_feedback = "feedback" in stripped
            continue
        if stripped.startswith("feedback:") or under_feedback:
            kept.append(line)
    return "\n".join(kept)


def is_advice_step(outputs: tuple[Field, ...], inputs: dict[str, str]) -> bool:
    """SIMBA's contrast step: rules per module from a better and a worse run."""
    return any(f.name == "module_advice" for f in outputs) and "module_names" in inputs


def advise(prompt: ParsedPrompt, rng: random.Random) -> dict[str, Any]:
    """A rule per module: most often a key idea of the task the modules' instructions do
    not state yet (what the better run did right), else a rule that helps nothing."""
    inputs = prompt.inputs
    names = _names(inputs.get("module_names", ""))
    evidence = " ".join(inputs.get(k, "") for k in ("program_inputs", "better_program_trajectory"))
    defined = inputs.get("modules_defn", "").lower()
    task = datasets.detect_task([evidence])
    advice: dict[str, str] = {}
    for name in names:
        missing = [] if task is None else [
            idea for idea in tasks.profile(task).ideas if not any(k in defined for k in idea.keywords)
        ]
        if missing and rng.random() < _GUESS_RATE:
            advice[name] = f"When the input looks like this one: {rng.choice(rng.choice(missing).sentences)}"
        else:
            advice[name] = "When the input looks like this one, read it once more before answering."
    return {"discussion": "The better run followed a sounder method than the worse one.", "module_advice": advice}


def _names(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = [part.strip(" '\"") for part in text.strip("[]").split(",")]
    return [str(v) for v in value if str(v)] if isinstance(value, list) else []
