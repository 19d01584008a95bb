"""Stand-ins for the predictors and LM clients other layers provide."""

from __future__ import annotations

import threading
from typing import Any

from dspex.clients.types import Usage
from dspex.primitives import Module, Parameter, Prediction, record_trace, record_usage, settings

SECRET = "sk-test-0123456789abcdef-SECRET"


class FakeLM:
    """An LM client: holds an API key and a lock (so it cannot be deep-copied)."""

    def __init__(self, model: str = "fake/model", api_key: str = SECRET) -> None:
        self.model = model
        self.api_key = api_key
        self._lock = threading.Lock()

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "api_key": self.api_key}

    def __repr__(self) -> str:
        return f"FakeLM({self.model!r})"


class KeyDroppingLM(FakeLM):
    """Pickles like dspex's LM: without its API key (or its lock)."""

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "api_key": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class KeyKeepingLM(KeyDroppingLM):
    """A careless LM whose pickle keeps the key."""

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "api_key": self.api_key}


class FakePredictor(Parameter):
    """A Parameter with demos/instructions state, like Predict's learned part."""

    def __init__(self, instructions: str = "Answer.", lm: Any = None) -> None:
        self.instructions = instructions
        self.demos: list[Any] = []
        self.lm = lm

    def dump_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"instructions": self.instructions, "demos": list(self.demos)}
        if self.lm is not None:
            state["lm"] = self.lm.dump_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.instructions = state["instructions"]
        self.demos = list(state["demos"])

    def reset(self) -> None:
        self.demos = []
        self.lm = None

    def __repr__(self) -> str:
        return f"FakePredictor({self.instructions!r})"


class EchoPredict(Module, Parameter):
    """A Predict-like module: answers with its input, reports usage and trace."""

    def __init__(self, tokens: int = 10) -> None:
        self.tokens = tokens
        self.demos: list[Any] = []
        self.lm: Any = None

    def _predict(self, question: str) -> Prediction:
        usage = Usage(prompt_tokens=self.tokens, completion_tokens=1, calls=1)
        pred = Prediction(answer=f"echo:{question}")
        pred.usage = usage
        record_usage(usage)
        record_trace(self, {"question": question}, pred)
        return pred

    def forward(self, question: str) -> Prediction:
        return self._predict(question)

    async def aforward(self, question: str) -> Prediction:
        return self._predict(question)

    def dump_state(self) -> dict[str, Any]:
        return {"demos": list(self.demos)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.demos = list(state["demos"])

    def reset(self) -> None:
        self.demos = []
        self.lm = None

    def __repr__(self) -> str:
        return f"EchoPredict(tokens={self.tokens})"


def caller_names() -> list[str]:
    return [type(m).__name__ for m in settings.caller_modules]
