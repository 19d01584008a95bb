"""Optimizers (teleprompters): compile a program against a metric into a better one.

Every optimizer's ``compile`` returns a new program (the student is untouched)
and records its run (steps, trials, usage) in the run store; see `base`.

Names are imported on first use (PEP 562), like ``dspex`` itself: ``import
dspex.optimizers`` loads no optimizer, and COPRO and MIPROv2 (which build
signatures, so load pydantic) cost nothing until asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Teleprompter": "dspex.optimizers.base",
    "BootstrapError": "dspex.errors",
    "BootstrapFewShot": "dspex.optimizers.bootstrap",
    "COPRO": "dspex.optimizers.copro",
    "CallableEmbedder": "dspex.optimizers.embedders",
    "Embedder": "dspex.optimizers.embedders",
    "HashingEmbedder": "dspex.optimizers.embedders",
    "OpenAIEmbedder": "dspex.optimizers.embedders",
    "SentenceTransformerEmbedder": "dspex.optimizers.embedders",
    "default_embedder": "dspex.optimizers.embedders",
    "Ensemble": "dspex.optimizers.ensemble",
    "EnsembledProgram": "dspex.optimizers.ensemble",
    "majority": "dspex.optimizers.ensemble",
    "KNN": "dspex.optimizers.knn",
    "KNNFewShot": "dspex.optimizers.knn",
    "LabeledFewShot": "dspex.optimizers.labeled",
    "MIPROv2": "dspex.optimizers.mipro",
    "GEPA": "dspex.optimizers.gepa",
    "SIMBA": "dspex.optimizers.simba",
    "BootstrapFinetune": "dspex.optimizers.finetune",
    "GEPAResult": "dspex.optimizers.gepa",
    "BootstrapFewShotWithRandomSearch": "dspex.optimizers.random_search",
    "BootstrapRS": "dspex.optimizers.random_search",
    "SearchError": "dspex.errors",
    "Run": "dspex.optimizers.run",
    "RunInfo": "dspex.optimizers.run",
    "RunStore": "dspex.optimizers.run_store",
}

# Spelled out (not sorted(_EXPORTS)) so linters and type checkers can read it.
__all__ = [
    "BootstrapError",
    "BootstrapFewShot",
    "BootstrapFinetune",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "COPRO",
    "CallableEmbedder",
    "Embedder",
    "Ensemble",
    "EnsembledProgram",
    "GEPA",
    "GEPAResult",
    "HashingEmbedder",
    "KNN",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPROv2",
    "OpenAIEmbedder",
    "Run",
    "RunInfo",
    "RunStore",
    "SIMBA",
    "SearchError",
    "SentenceTransformerEmbedder",
    "Teleprompter",
    "default_embedder",
    "majority",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.optimizers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    # Submodules already imported are attributes too; keep them visible.
    return sorted({*__all__, *globals()})


if TYPE_CHECKING:
    from dspex.errors import BootstrapError, SearchError
    from dspex.optimizers.base import Teleprompter
    from dspex.optimizers.bootstrap import BootstrapFewShot
    from dspex.optimizers.copro import COPRO
    from dspex.optimizers.embedders import (
        CallableEmbedder,
        Embedder,
        HashingEmbedder,
        OpenAIEmbedder,
        SentenceTransformerEmbedder,
        default_embedder,
    )
    from dspex.optimizers.ensemble import Ensemble, EnsembledProgram, majority
    from dspex.optimizers.finetune import BootstrapFinetune
    from dspex.optimizers.gepa import GEPA, GEPAResult
    from dspex.optimizers.knn import KNN, KNNFewShot
    from dspex.optimizers.labeled import LabeledFewShot
    from dspex.optimizers.mipro import MIPROv2
    from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch, BootstrapRS
    from dspex.optimizers.run import Run, RunInfo
    from dspex.optimizers.run_store import RunStore
    from dspex.optimizers.simba import SIMBA
