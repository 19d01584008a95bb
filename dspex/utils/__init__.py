"""Small helpers every layer may use (`aio`), and DSPy's ``dspy.utils`` names.

``from dspex.utils import DummyLM`` works as in DSPy: the test doubles live in
`dspex.testing` and load on first use, through `dspex.utils.dummies`.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "DummyLM": "dspex.utils.dummies",
    "DummyVectorizer": "dspex.utils.dummies",
}


# submodules reached as attributes in DSPy code (``dspy.utils.exceptions.AdapterParseError``)
_SUBMODULES = frozenset({"dummies", "exceptions"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"dspex.utils.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.utils' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
