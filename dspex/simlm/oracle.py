"""The simulated LM's answers: right with a probability that depends on the
prompt, typed as the prompt asks, deterministic for a given RNG.

For a question from a bundled dataset the gold answer is known, and the reply
is correct with probability

    p = clamp(base(task) + difficulty(question)
              + demo_gain * min(correct demos, demo_cap)
              - wrong_demo_penalty * wrong demos
              + instruction_gain * quality(instructions)
              + reasoning_gain(task) if a reasoning field precedes the answer
              + context_gain if a context input (retrieved passages) holds the answer,
              p_min, p_max)

so few-shot demos, better instructions and chain of thought all really help,
and an optimizer that finds them scores higher. Anything else gets
deterministic, type-correct filler (and instruction candidates for optimizer
proposal prompts).
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dspex.simlm import agent, coder, datasets, reflector, tasks
from dspex.simlm.prompt import COMPLETED, Field, ParsedPrompt
from dspex.simlm.typespec import coerce, render_chat, sample

_REASONING_NAMES = ("reason", "rationale", "thought", "thinking", "explanation", "chain_of_thought")
_DESCRIPTIVE_NAMES = ("summary", "description", "observation", "analysis", "overview", "task")


@dataclass(frozen=True, slots=True)
class OracleConfig:
    """How much each part of a prompt moves the probability of a correct answer."""

    demo_gain: float = 0.07
    demo_cap: int = 4
    wrong_demo_penalty: float = 0.08
    instruction_gain: float = 0.22
    difficulty_spread: float = 0.08
    p_min: float = 0.02
    p_max: float = 0.97
    #: told what was wrong with its earlier answer (an Assert's feedback, Refine's
    #: hint), a model gets it right more often
    feedback_gain: float = 0.35
    #: an agent's trajectory holds a tool result that states the answer: a model that
    #: reads it gets the answer right more often (not always: it may misread it)
    observation_gain: float = 0.2
    #: a fine-tuned model's training questions (normalised), answered right more often
    trained: frozenset[str] = frozenset()
    trained_gain: float = 0.45
    #: tasks a fine-tuned model saw enough examples of: it does better on all their questions
    trained_tasks: frozenset[str] = frozenset()
    trained_task_gain: float = 0.25
    #: a context input (retrieved passages) holds the answer: a model that reads it
    #: answers right much more often (the facts are invented: it cannot know them)
    context_gain: float = 0.45


def reply(prompt: ParsedPrompt, rng: random.Random, config: OracleConfig) -> str:
    """The assistant's reply text for a parsed prompt."""
    outputs = prompt.system.outputs
    record = find_record(prompt.inputs)
    if not outputs:
        if prompt.texts and reflector.is_plain_reflection(prompt.texts[-1]):
            return reflector.plain_reflection(prompt.texts[-1], rng)
        if record is None and prompt.texts:
            record = datasets.lookup(prompt.texts[-1])
        return _plain_reply(prompt, record, rng, config)
    if reflector.is_advice_step(outputs, prompt.inputs):
        # SIMBA's contrast step: a rule per module.
        values = reflector.advise(prompt, rng)
        values.update({f.name: _filler(f, prompt, rng) for f in outputs if f.name not in values})
    elif reflector.is_reflection_step(outputs, prompt.inputs):
        # GEPA's reflection: rewrite an instruction from feedback on its examples.
        values = reflector.reflect(prompt, rng)
        values.update({f.name: _filler(f, prompt, rng) for f in outputs if f.name not in values})
    elif coder.is_code_step(outputs):
        # A ProgramOfThought or CodeAct step: write code for the question.
        values = coder.step_values(prompt, rng)
        values.update({f.name: _filler(f, prompt, rng) for f in outputs if f.name not in values})
    elif agent.is_agent_step(outputs):
        # A ReAct step: choose a tool (or finish) the way an agent would.
        values = agent.step_values(prompt)
        values.update({f.name: _filler(f, prompt, rng) for f in outputs if f.name not in values})
    else:
        values = _values(prompt, record, rng, config)
    return format_reply(outputs, values, json_mode=prompt.json_mode)


def format_reply(outputs: tuple[Field, ...], values: dict[str, Any], *, json_mode: bool) -> str:
    if json_mode:
        return json.dumps({f.name: values[f.name] for f in outputs}, ensure_ascii=False)
    parts = [f"[[ ## {f.name} ## ]]\n{render_chat(values[f.name])}\n\n" for f in outputs]
    return "".join(parts) + f"[[ ## {COMPLETED} ## ]]"


def find_record(inputs: dict[str, str]) -> datasets.Record | None:
    """The dataset example an input value is the question of (whole value, then
    paragraph by paragraph, so a stray trailing line does not hide it)."""
    for value in inputs.values():
        record = datasets.lookup(value)
        if record is not None:
            return record
    for value in inputs.values():
        for paragraph in value.split("\n\n"):
            record = datasets.lookup(paragraph)
            if record is not None:
                return record
    return None


@lru_cache(maxsize=1024)
def is_reasoning(name: str) -> bool:
    lowered = name.lower()
    return any(key in lowered for key in _REASONING_NAMES)


def answer_field(outputs: tuple[Field, ...], record: datasets.Record | None) -> Field | None:
    """The output that carries the answer: `answer` if present, else the first
    non-reasoning output whose type can hold the gold answer."""
    named = [f for f in outputs if f.name == "answer"]
    candidates = named or [f for f in outputs if not is_reasoning(f.name)]
    for f in candidates:
        if record is None or coerce(record.answer, f.type) is not None:
            return f
    return None


def correct_probability(
    prompt: ParsedPrompt, record: datasets.Record, answer: Field, config: OracleConfig
) -> float:
    profile = tasks.profile(record.task)
    good, bad = _demo_counts(prompt, record, answer.name)
    p = profile.base + _difficulty(record.question, config.difficulty_spread)
    p += config.demo_gain * min(good, config.demo_cap) - config.wrong_demo_penalty * bad
    p += config.instruction_gain * tasks.instruction_quality(
        record.task, prompt.system.instructions
    )
    if _reasoning_before(prompt.system.outputs, answer):
        p += profile.reasoning_gain
    if _has_feedback(prompt.inputs):
        p += config.feedback_gain
    if _observed(prompt.inputs, record):
        p += config.observation_gain
    if config.trained and datasets.normalise(record.question) in config.trained:
        p += config.trained_gain
    if record.task in config.trained_tasks:
        p += config.trained_task_gain
    if _in_context(prompt.inputs, record):
        p += config.context_gain
    return min(max(p, config.p_min), config.p_max)


_FEEDBACK_INPUTS = ("feedback", "hint_")


def _has_feedback(inputs: dict[str, str]) -> bool:
    return any(inputs.get(name, "").strip() not in ("", "N/A") for name in _FEEDBACK_INPUTS)


def _observed(inputs: dict[str, str], record: datasets.Record) -> bool:
    gold = str(record.answer).lower()
    return any(gold in text.lower() for text in agent.observations(inputs))


# Input names that carry retrieved passages (DSPy's RAG programs call it `context`).
_CONTEXT_NAMES = ("context", "passage", "document", "retriev", "evidence", "knowledge")


def _in_context(inputs: dict[str, str], record: datasets.Record) -> bool:
    gold = str(record.answer).lower()
    return any(
        gold in text.lower()
        for name, text in inputs.items()
        if any(key in name.lower() for key in _CONTEXT_NAMES)
    )


def _values(
    prompt: ParsedPrompt, record: datasets.Record | None, rng: random.Random, config: OracleConfig
) -> dict[str, Any]:
    outputs = prompt.system.outputs
    target = answer_field(outputs, record) if record is not None else None
    values: dict[str, Any] = {}
    observed = coder.answer_from_code(prompt.inputs)
    if observed is None and record is None:
        observed = agent.answer_from_trajectory(prompt.inputs)
    if observed is not None:
        # An agent's extraction step, or the answer step after code ran: the answer is
        # what the tools found or the code computed.
        target = answer_field(outputs, None)
        if target is not None:
            value = coerce(observed, target.type)
            values[target.name] = value if value is not None else sample(target.type, rng, observed)
            for f in outputs:
                if is_reasoning(f.name) and f.type.name == "str":
                    values[f.name] = f"The tools found {observed}, which answers the question."
    elif record is not None and target is not None:
        chosen = coerce(_choose_answer(prompt, record, target, rng, config), target.type)
        # A wrong answer may not fit a narrower type (a Literal without that label).
        values[target.name] = chosen if chosen is not None else sample(target.type, rng, "")
        for f in outputs:
            if is_reasoning(f.name) and f.type.name == "str":
                values[f.name] = tasks.explain(record, values[target.name])
    for f in outputs:
        if f.name not in values:
            values[f.name] = _filler(f, prompt, rng)
    return values


def _choose_answer(
    prompt: ParsedPrompt,
    record: datasets.Record,
    target: Field,
    rng: random.Random,
    config: OracleConfig,
) -> Any:
    copied = _demo_answer_for(prompt, record, target.name)
    if copied is not None and coerce(copied, target.type) is not None:
        # The very question is among the demos: a model copies that answer.
        return copied if rng.random() < config.p_max else tasks.wrong_answer(record, rng)
    p = correct_probability(prompt, record, target, config)
    return record.answer if rng.random() < p else tasks.wrong_answer(record, rng)


def _demo_counts(
    prompt: ParsedPrompt, record: datasets.Record, answer_name: str
) -> tuple[int, int]:
    """(correct, wrong) demos of the same task, judged against their gold answers."""
    good = bad = 0
    for demo in prompt.demos:
        demo_record = find_record(demo.inputs)
        if demo_record is None or demo_record.task != record.task:
            continue
        given = demo.outputs.get(answer_name, demo.outputs.get("answer"))
        if given is None:
            continue
        if same_answer(given, demo_record.answer):
            good += 1
        else:
            bad += 1
    return good, bad


def _demo_answer_for(prompt: ParsedPrompt, record: datasets.Record, answer_name: str) -> Any:
    for demo in prompt.demos:
        if find_record(demo.inputs) == record:
            return demo.outputs.get(answer_name, demo.outputs.get("answer"))
    return None


def same_answer(given: Any, gold: Any) -> bool:
    """Loose equality an evaluator would use: case, whitespace and 95 vs "95.0"."""
    a, b = datasets.normalise(str(given)), datasets.normalise(str(gold))
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _reasoning_before(outputs: tuple[Field, ...], answer: Field) -> bool:
    for f in outputs:
        if f is answer:
            return False
        if is_reasoning(f.name):
            return True
    return False


def _difficulty(question: str, spread: float) -> float:
    """A fixed per-question offset in [-spread, spread]: some questions are harder."""
    bucket = zlib.crc32(question.encode()) % 1001
    return spread * (bucket / 500.0 - 1.0)


def _filler(f: Field, prompt: ParsedPrompt, rng: random.Random) -> Any:
    """Deterministic, type-correct content for a field the datasets do not answer."""
    name = f.name.lower()
    if f.type.name == "str":
        if "instruction" in name:
            return tasks.propose_instruction(datasets.detect_task(prompt.texts), rng)
        if is_reasoning(name):
            return f"Let me think about this step by step. {_snippet(prompt)}".strip()
        if any(key in name for key in _DESCRIPTIVE_NAMES):
            return tasks.describe(datasets.detect_task(prompt.texts))
    return sample(f.type, rng, _text_for(f, prompt))


def _text_for(f: Field, prompt: ParsedPrompt) -> str:
    snippet = _snippet(prompt)
    label = f.name.replace("_", " ").capitalize()
    return f"{label} for: {snippet}" if snippet else f"{label}."


def _snippet(prompt: ParsedPrompt, limit: int = 60) -> str:
    first = next(iter(prompt.inputs.values()), "")
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _plain_reply(
    prompt: ParsedPrompt, record: datasets.Record | None, rng: random.Random, config: OracleConfig
) -> str:
    """A reply for a prompt that is not in dspex's format (plain chat)."""
    if record is None:
        last = prompt.texts[-1] if prompt.texts else ""
        words = " ".join(last.split()[:12])
        return f"This is a simulated reply to: {words}" if words else "This is a simulated reply."
    p = tasks.profile(record.task).base
    chosen = record.answer if rng.random() < p else tasks.wrong_answer(record, rng)
    return str(chosen)
