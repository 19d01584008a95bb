"""DSPy's path to `LabeledFewShot`; see `dspex.optimizers.labeled`."""

from dspex.optimizers.labeled import LabeledFewShot

__all__ = ["LabeledFewShot"]
