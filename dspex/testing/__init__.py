"""LMs and vectorizers for unit tests of dspex programs: scripted answers, no network.

`DummyLM` answers each request from a script in the reply format of an adapter;
`DummyVectorizer` turns texts into deterministic vectors for KNN and retrieval
tests. DSPy code imports them as ``dspex.utils.dummies``.
"""

from dspex.testing.dummy_lm import DummyLM
from dspex.testing.dummy_vectorizer import DummyVectorizer

__all__ = ["DummyLM", "DummyVectorizer"]
