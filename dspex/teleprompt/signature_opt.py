"""DSPy's path to `COPRO`; see `dspex.optimizers.copro`."""

from dspex.optimizers.copro import COPRO

__all__ = ["COPRO"]
