"""DSPy's path to `Predict`; see `dspex.modules.predict`."""

from dspex.modules.predict import Predict

__all__ = ["Predict"]
