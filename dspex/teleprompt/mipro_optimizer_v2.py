"""DSPy's path to `MIPROv2`; see `dspex.optimizers.mipro`."""

from dspex.optimizers.mipro import MIPROv2

__all__ = ["MIPROv2"]
