"""DSPy's path to `ChainOfThought`; see `dspex.modules.chain_of_thought`."""

from dspex.modules.chain_of_thought import ChainOfThought

__all__ = ["ChainOfThought"]
