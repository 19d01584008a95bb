"""DSPy's path to the test doubles (``dspy.utils.dummies``); see `dspex.testing`."""

from dspex.testing import DummyLM, DummyVectorizer

__all__ = ["DummyLM", "DummyVectorizer"]
