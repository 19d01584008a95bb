"""Optimizers (teleprompters): compile a program against a metric into a better one.

Every optimizer's ``compile`` returns a new program (the student is untouched)
and records its run (steps, trials, usage) in the run store; see `base`.
Modules here import nothing heavy at import time (numpy and models load on use).
"""

from dspex.optimizers.base import Teleprompter
from dspex.optimizers.bootstrap import BootstrapError, BootstrapFewShot
from dspex.optimizers.embedders import (
    CallableEmbedder,
    Embedder,
    HashingEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    default_embedder,
)
from dspex.optimizers.ensemble import Ensemble, EnsembledProgram, majority
from dspex.optimizers.knn import KNN, KNNFewShot
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.random_search import (
    BootstrapFewShotWithRandomSearch,
    BootstrapRS,
    SearchError,
)
from dspex.optimizers.run import Run, RunInfo
from dspex.optimizers.run_store import RunStore

__all__ = [
    "KNN",
    "BootstrapError",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "CallableEmbedder",
    "Embedder",
    "EnsembledProgram",
    "Ensemble",
    "HashingEmbedder",
    "KNNFewShot",
    "LabeledFewShot",
    "OpenAIEmbedder",
    "Run",
    "RunInfo",
    "RunStore",
    "SearchError",
    "SentenceTransformerEmbedder",
    "Teleprompter",
    "default_embedder",
    "majority",
]
