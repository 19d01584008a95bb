"""DSPy's path to `KNNFewShot`; see `dspex.optimizers.knn`."""

from dspex.optimizers.knn import KNNFewShot

__all__ = ["KNNFewShot"]
