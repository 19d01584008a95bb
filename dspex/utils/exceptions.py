"""DSPy's path to its adapter errors (``dspy.utils.exceptions``); they live in `dspex.errors`."""

from dspex.errors import AdapterParseError

__all__ = ["AdapterParseError"]
