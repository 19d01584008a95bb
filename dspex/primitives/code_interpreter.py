"""DSPy's import path for the interpreter's errors and answers
(``dspy.primitives.code_interpreter``): they live in `dspex.errors` and
`dspex.sandbox`; this module only re-exports them so DSPy code ports by changing
the import."""

from dspex.errors import CodeExecutionError, CodeInterpreterError
from dspex.sandbox.values import FinalOutput

__all__ = ["CodeExecutionError", "CodeInterpreterError", "FinalOutput"]
