"""DSPy's import path for the modules (``dspy.predict``): they live in
`dspex.modules`; this package only re-exports them so DSPy code ports by
changing the import."""

from dspex.modules import ChainOfThought, Predict
from dspex.modules.best_of_n import BestOfN
from dspex.modules.code_act import CodeAct
from dspex.modules.multi_chain_comparison import MultiChainComparison
from dspex.modules.parallel import Parallel
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.modules.react import ReAct
from dspex.modules.refine import Refine
from dspex.optimizers.knn import KNN

__all__ = [
    "KNN",
    "BestOfN",
    "ChainOfThought",
    "CodeAct",
    "MultiChainComparison",
    "Parallel",
    "Predict",
    "ProgramOfThought",
    "ReAct",
    "Refine",
]
