"""DSPy's path to the optimizer base class; see `dspex.optimizers.base`."""

from dspex.optimizers.base import Teleprompter

__all__ = ["Teleprompter"]
