"""DSPy's import path (``dspy.predict.program_of_thought``); the module lives in `dspex.modules.program_of_thought`."""

from dspex.modules.program_of_thought import ProgramOfThought

__all__ = ["ProgramOfThought"]
