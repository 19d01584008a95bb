"""`CodeAct`: an agent that acts by writing Python code that calls tools (DSPy's
``dspy.CodeAct``).

Each step, ``codeact`` (a `Predict` over the signature's inputs and the trajectory)
writes ``generated_code`` and says whether it is ``finished``. The code runs in a
`dspex.PythonInterpreter` whose sandboxed code can call the tools by name: a call
crosses to the host, where the tool runs with the host's clients and secrets, and its
JSON result goes back into the sandbox. Variables persist from step to step within
one call. What the code printed or returned becomes ``code_output_i`` in the
trajectory; an error (syntax, exception, time limit) becomes ``observation_i`` so the
LM can fix it next step. After a finished step, or ``max_iters`` steps, ``extractor``
(a `ChainOfThought` over the inputs and the trajectory) writes the signature's
outputs; the `Prediction` carries ``trajectory``.

DSPy pastes each tool's source code into the sandbox, so only plain functions work
there; here the tools stay on the host, so any `dspex.Tool` (a callable object, an
async function, a closure over a client) works.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from dspex.adapters.chat import ChatAdapter
from dspex.adapters.types.tool import Tool
from dspex.errors import CodeInterpreterError, ConfigurationError, ContextWindowExceededError
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.code_runs import REPAIRABLE, describe_error, extract_code, forget_space, run_code
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.sandbox import PythonInterpreter
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, ensure_signature

logger = logging.getLogger(__name__)

_TRUNCATION_ATTEMPTS = 3


class CodeAct(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        tools: Iterable[Callable[..., Any] | Tool],
        max_iters: int = 5,
        interpreter: PythonInterpreter | None = None,
    ) -> None:
        super().__init__()
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.tools: dict[str, Tool] = {}
        for item in tools:
            tool = item if isinstance(item, Tool) else Tool(item)
            if not tool.name.isidentifier():
                raise ConfigurationError(f"CodeAct tool name {tool.name!r} is not a Python identifier: give it name=")
            if tool.name in self.tools:
                raise ConfigurationError(f"two CodeAct tools are named {tool.name!r}: give one a different name=")
            self.tools[tool.name] = tool
        self.interpreter = interpreter

        step = signature
        for name in signature.output_fields:
            step = step.delete(name)
        self.codeact = Predict(
            step.append("trajectory", InputField(), str)
            .append(
                "generated_code",
                OutputField(desc="Python code for this step, fenced in ```python; print what you need to see"),
                str,
            )
            .append("finished", OutputField(desc="true once the trajectory holds everything the outputs need"), bool)
            .with_instructions(_instructions(signature, self.tools))
        )
        self.extractor = ChainOfThought(signature.append("trajectory", InputField(), str))

    async def aforward(self, **kwargs: Any) -> Prediction:
        max_iters = kwargs.pop("max_iters", self.max_iters)
        inputs = {name: kwargs[name] for name in self.signature.input_fields if name in kwargs}
        interpreter = self._get_interpreter()
        space = uuid.uuid4().hex  # this call's variables, kept in the sandbox between steps
        trajectory: dict[str, Any] = {}
        try:
            for step in range(max_iters):
                written = await self._call_truncating(self.codeact, trajectory, inputs)
                try:
                    code = extract_code(written.generated_code)
                except SyntaxError as exc:
                    trajectory[f"observation_{step}"] = f"The code could not be read: {exc}"
                    continue
                trajectory[f"generated_code_{step}"] = code
                try:
                    run = await run_code(interpreter, code, tools=list(self.tools), space=space)
                except REPAIRABLE as exc:
                    trajectory[f"observation_{step}"] = f"The code failed: {describe_error(exc)}"
                else:
                    trajectory[f"code_output_{step}"] = run.as_text()
                if written.finished is True:
                    break
        finally:
            # A sandbox restarted since has lost the space already.
            with contextlib.suppress(CodeInterpreterError):
                await forget_space(interpreter, space)
        extracted = await self._call_truncating(self.extractor, trajectory, inputs)
        return Prediction(trajectory=trajectory, **dict(extracted.items()))

    def _get_interpreter(self) -> PythonInterpreter:
        if self.interpreter is None:
            self.interpreter = PythonInterpreter(tools=list(self.tools.values()))
        return self.interpreter

    async def _call_truncating(self, module: Any, trajectory: dict[str, Any], inputs: dict[str, Any]) -> Any:
        last_error: ContextWindowExceededError | None = None
        for _ in range(_TRUNCATION_ATTEMPTS):
            try:
                return await module.acall(**inputs, trajectory=_format(trajectory))
            except ContextWindowExceededError as exc:
                logger.warning("CodeAct: the prompt exceeds the context window; dropping the oldest step")
                last_error = exc
                if not _drop_oldest_step(trajectory):
                    break
        raise ContextWindowExceededError(
            "CodeAct: the prompt still exceeds the context window after dropping the oldest "
            "steps; shorten the inputs or what the code prints, or lower max_iters"
        ) from last_error


def _format(trajectory: dict[str, Any]) -> str:
    adapter = settings.adapter or ChatAdapter()
    return adapter.format_field_with_value(trajectory)


def _drop_oldest_step(trajectory: dict[str, Any]) -> bool:
    steps = sorted({int(key.rsplit("_", 1)[1]) for key in trajectory})
    if len(steps) <= 1:
        return False
    for key in [k for k in trajectory if k.endswith(f"_{steps[0]}")]:
        del trajectory[key]
    return True


def _instructions(signature: type[Signature], tools: dict[str, Tool]) -> str:
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    lines = [signature.instructions, ""] if signature.instructions else []
    lines += [
        f"You act as an agent that works by writing Python. You receive {inputs} and the "
        "trajectory of your steps so far.",
        f"Each step, write Python code that moves you toward {outputs}; it runs in a sandbox "
        "with the standard library, variables you set stay for your next steps, and what it "
        "prints (or its last expression) is added to the trajectory.",
        f"Set finished to true once the trajectory holds what {outputs} need.",
    ]
    if tools:
        lines += ["", "Functions you can call from the code (keyword arguments):"]
        lines += [f"({index}) {tool}" for index, tool in enumerate(tools.values(), start=1)]
    return "\n".join(lines)


__all__ = ["CodeAct"]
