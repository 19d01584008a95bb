"""`Retrieve`: search the configured retriever (DSPy's ``dspy.Retrieve``).

    dspex.configure(rm=dspex.ColBERTv2(url=...))     # or a retrievers.Embeddings, or a function
    retrieve = dspex.Retrieve(k=3)
    retrieve("Who rules Ulmemoor?").passages         # three passage texts, best first

The retriever is ``settings.rm``, read at call time (so ``dspex.context(rm=...)``
switches it for a block). It is called as ``rm(query, k=k, **kwargs)`` and may
return a Prediction with ``passages`` (`dspex.retrievers.Embeddings`), or a list of
strings, of records with ``long_text`` (`dspex.ColBERTv2`) or of dicts with ``text``.

Retrieve is a Module, not a learnable Parameter: optimizers leave it alone.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from dspex.errors import ConfigurationError, NoRetrieverError
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings


class Retrieve(Module):
    """The top ``k`` passages for a query from ``settings.rm``."""

    name = "Search"
    input_variable = "query"
    desc = "takes a search query and returns one or more potentially relevant passages from a corpus"

    def __init__(self, k: int = 3, callbacks: list[Any] | None = None) -> None:
        super().__init__(callbacks=callbacks)
        _check_k(k)
        self.k = k

    def reset(self) -> None:
        """Nothing is learned here (DSPy's Retrieve has the method too)."""

    def dump_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"k": self.k}

    def load_state(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> Retrieve:
        if "k" in state:
            _check_k(state["k"])
            self.k = state["k"]
        return self

    def forward(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        rm, k = self._setup(query, k)
        return Prediction(passages=passage_texts(rm(query, k=k, **kwargs)))

    async def aforward(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        rm, k = self._setup(query, k)
        acall = getattr(rm, "acall", None)
        if acall is not None and inspect.iscoroutinefunction(acall):
            found = await acall(query, k=k, **kwargs)
        elif inspect.iscoroutinefunction(rm):
            found = await rm(query, k=k, **kwargs)
        else:
            found = await asyncio.to_thread(rm, query, k=k, **kwargs)
        return Prediction(passages=passage_texts(found))

    def _setup(self, query: Any, k: int | None) -> tuple[Any, int]:
        rm = settings.rm
        if rm is None:
            raise NoRetrieverError(
                "dspex.Retrieve has no retriever to search: set one with "
                "dspex.configure(rm=dspex.ColBERTv2(url=...)) or "
                "dspex.configure(rm=dspex.retrievers.Embeddings(corpus=..., embedder=...))"
            )
        if not isinstance(query, str):
            raise ConfigurationError(f"Retrieve searches a query string, got {type(query).__name__}")
        k = self.k if k is None else k
        _check_k(k)
        return rm, k

    def __repr__(self) -> str:
        return f"Retrieve(k={self.k})"


def passage_texts(found: Any) -> list[str]:
    """The passage texts in whatever a retriever returned."""
    passages = getattr(found, "passages", None)
    if passages is not None and not isinstance(found, list | tuple):
        found = passages
    if isinstance(found, str) or not hasattr(found, "__iter__"):
        found = [found]
    texts = []
    for item in found:
        if isinstance(item, str):
            texts.append(item)
            continue
        text = item.get("long_text", item.get("text")) if isinstance(item, dict) else getattr(item, "long_text", None)
        if not isinstance(text, str):
            raise ConfigurationError(
                f"the retriever (settings.rm) returned a {type(item).__name__} with no passage text: "
                "return strings, records with long_text, or dicts with text"
            )
        texts.append(text)
    return texts


def _check_k(k: Any) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigurationError(f"Retrieve(k=...) must be an int >= 1, got {k!r}")


__all__ = ["Retrieve", "passage_texts"]
