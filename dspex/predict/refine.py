"""DSPy's path to `Refine`; see `dspex.modules.refine`."""

from dspex.modules.refine import Refine

__all__ = ["Refine"]
