"""`ReAct`: an agent that reasons, calls tools, and answers (DSPy's ``dspy.ReAct``).

Each step a `Predict` over the signature's inputs and the trajectory so far asks
the LM for ``next_thought``, ``next_tool_name`` (one of the tools or ``finish``)
and ``next_tool_args`` (a JSON object). The tool runs and its result, or what
went wrong (bad arguments, an unknown tool, the tool raising), becomes the
step's observation, so the LM can correct itself. The loop ends on ``finish``
or after ``max_iters`` steps; a `ChainOfThought` over the inputs and the
trajectory then writes the signature's outputs. The returned `Prediction`
carries ``trajectory``: ``thought_i``, ``tool_name_i``, ``tool_args_i``,
``observation_i`` for each step ``i``.

When the prompt outgrows the model's context window, the oldest steps are
dropped and the call retried. Both predictors (``react`` and
``extract.predict``) are ordinary parameters, so optimizers give them demos and
instructions like any other predictor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

from dspex.adapters.chat import ChatAdapter, split_sections
from dspex.adapters.types.tool import Tool
from dspex.adapters.values import extract_json_object
from dspex.errors import (
    AdapterParseError,
    ConfigurationError,
    ContextWindowExceededError,
    ToolError,
)
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, ensure_signature

logger = logging.getLogger(__name__)

FINISH = "finish"
#: keys one step adds to the trajectory, in order
STEP_KEYS = ("thought", "tool_name", "tool_args", "observation")
#: attempts at a call whose prompt overflows the context window, dropping a step each time
_TRUNCATION_ATTEMPTS = 3


class ReAct(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        tools: Iterable[Callable[..., Any] | Tool],
        max_iters: int = 20,
    ) -> None:
        super().__init__()
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.tools: dict[str, Tool] = _tool_table(tools, signature)

        react_signature = signature.with_instructions(_agent_instructions(signature, self.tools))
        for name in signature.output_fields:
            react_signature = react_signature.delete(name)
        react_signature = (
            react_signature.append("trajectory", InputField(), str)
            .append("next_thought", OutputField(), str)
            .append("next_tool_name", OutputField(), Literal[tuple(self.tools)])  # type: ignore[misc]
            .append("next_tool_args", OutputField(), dict[str, Any])
        )
        extract_signature = signature.insert(len(signature.input_fields), "trajectory", InputField(), str)
        self.react = Predict(react_signature)
        self.extract = ChainOfThought(extract_signature)

    async def aforward(self, **input_args: Any) -> Prediction:
        max_iters = input_args.pop("max_iters", self.max_iters)
        trajectory: dict[str, Any] = {}
        for step in range(max_iters):
            try:
                choice = await self._call_truncating(self.react, trajectory, input_args)
            except ContextWindowExceededError as exc:
                logger.warning("ReAct: ending the trajectory, the prompt no longer fits: %s", exc)
                break
            except AdapterParseError as exc:
                # The LM named no valid tool or wrote unreadable arguments: say so in the
                # trajectory and let it try again next step.
                thought, tool_name, tool_args, observation = _unreadable_step(exc, self.tools)
                _record(trajectory, step, thought, tool_name, tool_args, observation)
                continue
            tool_name, tool_args = choice.next_tool_name, choice.next_tool_args
            observation = await self._run_tool(tool_name, tool_args)
            _record(trajectory, step, choice.next_thought, tool_name, tool_args, observation)
            if tool_name == FINISH:
                break
        extracted = await self._call_truncating(self.extract, trajectory, input_args)
        return Prediction(trajectory=trajectory, **dict(extracted.items()))

    async def _run_tool(self, name: str, args: Any) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            return f"Unknown tool {name!r}: choose one of {', '.join(self.tools)}."
        if not isinstance(args, dict):
            return f"Execution error in {name}: its arguments must be a JSON object, got {args!r:.200}"
        try:
            return await tool.acall(**args)
        except ToolError as exc:
            return f"Execution error in {name}: {exc}"
        except Exception as exc:  # the tool's own failure is information for the LM
            return f"Execution error in {name}: {type(exc).__name__}: {exc}"

    async def _call_truncating(self, module: Any, trajectory: dict[str, Any], inputs: dict[str, Any]) -> Any:
        last_error: ContextWindowExceededError | None = None
        for _ in range(_TRUNCATION_ATTEMPTS):
            try:
                return await module.acall(**inputs, trajectory=self._format_trajectory(trajectory))
            except ContextWindowExceededError as exc:
                logger.warning("ReAct: the prompt exceeds the context window; dropping the oldest step")
                last_error = exc
                self.truncate_trajectory(trajectory)
        raise ContextWindowExceededError(
            f"the prompt still exceeds the context window after dropping {_TRUNCATION_ATTEMPTS} "
            "trajectory steps; shorten the inputs or tool results, or lower max_iters"
        ) from last_error

    def _format_trajectory(self, trajectory: dict[str, Any]) -> str:
        adapter = settings.adapter or ChatAdapter()
        return adapter.format_field_with_value(trajectory)

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest step, in place (override for another policy). A trajectory of
        one step cannot shrink: `ContextWindowExceededError`."""
        keys = list(trajectory)
        if len(keys) <= len(STEP_KEYS):
            raise ContextWindowExceededError(
                "the prompt exceeds the context window with a trajectory of at most one step; "
                "shorten the inputs or the tool results"
            )
        for key in keys[: len(STEP_KEYS)]:
            del trajectory[key]
        return trajectory


def _tool_table(tools: Iterable[Callable[..., Any] | Tool], signature: type[Signature]) -> dict[str, Tool]:
    table: dict[str, Tool] = {}
    for item in tools:
        tool = item if isinstance(item, Tool) else Tool(item)
        if tool.name == FINISH:
            raise ConfigurationError(f"a ReAct tool may not be named {FINISH!r}: ReAct adds that tool itself")
        if tool.name in table:
            raise ConfigurationError(f"two ReAct tools are named {tool.name!r}: give one a different name=")
        table[tool.name] = tool
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    table[FINISH] = Tool(
        _finish,
        name=FINISH,
        desc=f"Call this when the trajectory holds everything needed to produce {outputs}.",
        args={},
    )
    return table


def _finish(**_ignored: Any) -> str:
    # Arguments a model adds to `finish` are harmless: the step still ends the loop.
    return "Completed."


def _agent_instructions(signature: type[Signature], tools: dict[str, Tool]) -> str:
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    lines = [signature.instructions, ""] if signature.instructions else []
    lines += [
        f"You act as an agent. You receive {inputs} and the trajectory of your steps so far.",
        f"Use the tools below to gather what you need to produce {outputs}.",
        "Each step, write next_thought (your reasoning and plan), then next_tool_name and "
        "next_tool_args (a JSON object of the tool's arguments). The tool's result is added "
        "to the trajectory as the step's observation.",
        f"When you have what you need, call `{FINISH}` with empty arguments.",
        "",
        "Tools:",
    ]
    lines += [f"({index}) {tool}" for index, tool in enumerate(tools.values(), start=1)]
    return "\n".join(lines)


def _record(trajectory: dict[str, Any], step: int, thought: Any, name: Any, args: Any, observation: Any) -> None:
    for key, value in zip(STEP_KEYS, (thought, name, args, observation), strict=True):
        trajectory[f"{key}_{step}"] = value


def _unreadable_step(exc: AdapterParseError, tools: dict[str, Tool]) -> tuple[str, str, Any, str]:
    """What the LM wrote in a step whose reply did not parse, and the observation saying why."""
    raw: dict[str, Any] = split_sections(exc.raw_text) or extract_json_object(exc.raw_text) or {}
    thought = str(exc.parsed.get("next_thought", raw.get("next_thought", "")))
    tool_name = str(raw.get("next_tool_name", "")).strip()
    tool_args = raw.get("next_tool_args", {})
    if exc.field == "next_tool_name":
        observation = f"Unknown tool {tool_name!r}: choose one of {', '.join(tools)}."
    elif exc.field == "next_tool_args":
        observation = f"next_tool_args must be a JSON object of the tool's arguments, got {tool_args!r:.200}."
    else:
        observation = f"The step could not be read ({exc.field or 'reply'}); answer in the requested format."
    return thought, tool_name, tool_args, observation


__all__ = ["ReAct"]
