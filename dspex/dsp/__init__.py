"""DSPy's ``dspy.dsp`` import paths (``from dspy.dsp.colbertv2 import ColBERTv2``)."""
