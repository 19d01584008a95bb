"""``dspy.dsp.colbertv2``'s path: the client lives in `dspex.retrievers.colbertv2`."""

from dspex.retrievers.colbertv2 import (
    ColBERTv2,
    PassageRecord,
    colbertv2_get_request_v2,
    colbertv2_post_request_v2,
)

dotdict = PassageRecord  # DSPy's name for the attribute-readable dict
colbertv2_get_request = colbertv2_get_request_v2
colbertv2_post_request = colbertv2_post_request_v2

__all__ = [
    "ColBERTv2",
    "PassageRecord",
    "colbertv2_get_request",
    "colbertv2_get_request_v2",
    "colbertv2_post_request",
    "colbertv2_post_request_v2",
    "dotdict",
]
