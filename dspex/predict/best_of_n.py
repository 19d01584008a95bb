"""DSPy's path to `BestOfN`; see `dspex.modules.best_of_n`."""

from dspex.modules.best_of_n import BestOfN

__all__ = ["BestOfN"]
