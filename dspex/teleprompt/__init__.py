"""DSPy's import path for the optimizers (``dspy.teleprompt``): they live in
`dspex.optimizers`; this package only re-exports them so DSPy code ports by
changing the import."""

from dspex.optimizers import (
    COPRO,
    GEPA,
    KNN,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    BootstrapFinetune,
    BootstrapRS,
    Ensemble,
    KNNFewShot,
    LabeledFewShot,
    MIPROv2,
    Teleprompter,
)

__all__ = [
    "COPRO",
    "KNN",
    "BootstrapFewShot",
    "BootstrapFinetune",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "Ensemble",
    "GEPA",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPROv2",
    "SIMBA",
    "Teleprompter",
]
