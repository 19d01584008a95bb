"""Program building blocks."""

from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.modules.react import ReAct

__all__ = ["ChainOfThought", "Predict", "ReAct"]
