"""DSPy's path to `ReAct`; see `dspex.modules.react`."""

from dspex.modules.react import ReAct

__all__ = ["ReAct"]
