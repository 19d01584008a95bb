"""DSPy's path to `Predict`; see `dspex.modules.predict`."""

from dspex.modules.predict import Predict
from dspex.primitives.saving import serialize_object

__all__ = ["Predict", "serialize_object"]
