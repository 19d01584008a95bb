"""DSPy's import path for the sandbox (``dspy.primitives.python_interpreter``): it
lives in `dspex.sandbox`; this module only re-exports it so DSPy code ports by
changing the import."""

from dspex.errors import CodeExecutionError, CodeInterpreterError
from dspex.sandbox.interpreter import PythonInterpreter
from dspex.sandbox.values import FinalOutput

__all__ = ["CodeExecutionError", "CodeInterpreterError", "FinalOutput", "PythonInterpreter"]
