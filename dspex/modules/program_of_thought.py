"""`ProgramOfThought`: answer by writing a Python program and running it in the sandbox
(DSPy's ``dspy.ProgramOfThought``).

Three `ChainOfThought` predictors, each an ordinary parameter optimizers can tune:

- ``code_generate`` (the signature's inputs -> ``generated_code``) writes the program;
- ``code_regenerate`` (inputs, ``previous_code``, ``error`` -> ``generated_code``)
  repairs it after an error: a syntax error, an exception (with the sandbox's
  traceback), or a run stopped at the interpreter's time limit;
- ``generate_output`` (inputs, ``final_generated_code``, ``code_output`` -> the
  signature's outputs) writes the answer from what the program computed.

The program runs in a `dspex.PythonInterpreter` (Deno + Pyodide: no host files, no
network), one run per attempt; its result is what it passes to ``SUBMIT(...)``, else
the value of its last expression, else what it printed. After ``max_iters`` attempts
that all failed, `CodeRepairError` says what the last error was.

The interpreter: ``interpreter=`` shares one you made (its pool of sandbox processes
serves every call); by default each ProgramOfThought starts its own on first use and
keeps it (a copy sent to a Ray worker starts one there).
"""

from __future__ import annotations

import logging
from typing import Any

from dspex.errors import CodeRepairError
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.code_runs import REPAIRABLE, CodeRun, describe_error, extract_code, run_code
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.sandbox import PythonInterpreter
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, ensure_signature

logger = logging.getLogger(__name__)

_CODE_DESC = "a Python program that computes the answer; fence it in ```python"


class ProgramOfThought(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        max_iters: int = 3,
        interpreter: PythonInterpreter | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"ProgramOfThought(max_iters={max_iters!r}): the number of attempts, an int >= 1")
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.interpreter = interpreter
        inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
        outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
        self.code_generate = ChainOfThought(
            _with_inputs(signature)
            .append("generated_code", OutputField(desc=_CODE_DESC), str)
            .with_instructions(
                f"Given {inputs}, write a Python program whose result is the correct {outputs}. "
                "The program runs in a fresh interpreter with the standard library only. End it "
                "with an expression holding the result, or call SUBMIT({...}) with a dict "
                f"giving a value for each of {outputs}."
            )
        )
        self.code_regenerate = ChainOfThought(
            _with_inputs(signature)
            .append("previous_code", InputField(desc="the program that failed"), str)
            .append("error", InputField(desc="what went wrong when it ran"), str)
            .append("generated_code", OutputField(desc=_CODE_DESC), str)
            .with_instructions(
                f"A Python program written to compute {outputs} from {inputs} failed. Read the "
                "error, then write the whole program again with the mistake fixed."
            )
        )
        at = len(signature.input_fields)
        self.generate_output = ChainOfThought(
            signature.insert(at, "final_generated_code", InputField(desc="the program that ran"), str)
            .insert(at + 1, "code_output", InputField(desc="what the program computed"), str)
            .with_instructions(
                f"A program was written and run to answer this. From its code and its output, "
                f"give {outputs}."
                + (f"\n\n{signature.instructions}" if signature.instructions else "")
            )
        )

    async def aforward(self, **kwargs: Any) -> Prediction:
        inputs = {name: kwargs[name] for name in self.signature.input_fields if name in kwargs}
        interpreter = self._get_interpreter()
        code, error = "", ""
        for attempt in range(self.max_iters):
            if attempt == 0:
                written = await self.code_generate.acall(**inputs)
            else:
                written = await self.code_regenerate.acall(**inputs, previous_code=code, error=error)
            code = str(written.generated_code or "")
            try:
                code = extract_code(code)
                run: CodeRun = await run_code(interpreter, code)
            except REPAIRABLE as exc:
                error = _syntax(exc) if type(exc) is SyntaxError else describe_error(exc)
                logger.info("ProgramOfThought: attempt %d failed: %s", attempt + 1, error.splitlines()[-1:])
                continue
            answer = await self.generate_output.acall(**inputs, final_generated_code=code, code_output=run.as_text())
            return answer
        raise CodeRepairError(
            f"ProgramOfThought: the generated code failed {self.max_iters} time(s); the last error "
            f"was:\n{error}\nRaise max_iters, or give the predictors demos or instructions",
            attempts=self.max_iters,
            last_error=error,
        )

    def _get_interpreter(self) -> PythonInterpreter:
        if self.interpreter is None:
            self.interpreter = PythonInterpreter()
        return self.interpreter


def _with_inputs(signature: type[Signature]) -> type[Signature]:
    """``signature`` with its outputs removed (the inputs, their order and descriptions)."""
    result = signature
    for name in signature.output_fields:
        result = result.delete(name)
    return result


def _syntax(exc: SyntaxError) -> str:
    where = f" (line {exc.lineno})" if exc.lineno else ""
    return f"SyntaxError: {exc.msg}{where}" + (f"\n    {exc.text.strip()}" if exc.text else "")


__all__ = ["ProgramOfThought"]
