"""``dspy.dsp.colbertv2``'s path: the client lives in `dspex.retrievers.colbertv2`."""

from dspex.retrievers.colbertv2 import ColBERTv2, PassageRecord

dotdict = PassageRecord  # DSPy's name for the attribute-readable dict

__all__ = ["ColBERTv2", "PassageRecord", "dotdict"]
