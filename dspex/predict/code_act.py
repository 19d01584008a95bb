"""DSPy's import path (``dspy.predict.code_act``); the module lives in `dspex.modules.code_act`."""

from dspex.modules.code_act import CodeAct

__all__ = ["CodeAct"]
