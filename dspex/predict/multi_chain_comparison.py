"""DSPy's path to `MultiChainComparison`; see `dspex.modules.multi_chain_comparison`."""

from dspex.modules.multi_chain_comparison import MultiChainComparison

__all__ = ["MultiChainComparison"]
