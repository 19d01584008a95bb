"""DSPy's path to `BootstrapFewShot`; see `dspex.optimizers.bootstrap`."""

from dspex.optimizers.bootstrap import BootstrapFewShot

__all__ = ["BootstrapFewShot"]
