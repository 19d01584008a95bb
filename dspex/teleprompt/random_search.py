"""DSPy's path to random search; see `dspex.optimizers.random_search`."""

from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch, BootstrapRS

__all__ = ["BootstrapFewShotWithRandomSearch", "BootstrapRS"]
