"""DSPy's path to `Ensemble`; see `dspex.optimizers.ensemble`."""

from dspex.optimizers.ensemble import Ensemble

__all__ = ["Ensemble"]
