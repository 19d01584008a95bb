"""BaseLM: a model written by the user (forward, aforward or __call__) is what Predict calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import dspex
from dspex.clients.base_lm import LM_CLASS_STATE_KEY, BaseLM
from dspex.errors import ConfigurationError

REPLY = "[[ ## answer ## ]]\n{}\n\n[[ ## completed ## ]]"


class EchoLM(BaseLM):
    """Answers with the question it was asked, as an OpenAI-style object with attributes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("echo-model", **kwargs)
        self.seen: list[dict[str, Any]] = []
        self.threads: set[str] = set()

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        self.seen.append(kwargs)
        self.threads.add(threading.current_thread().name)
        question = messages[-1]["content"].split("[[ ## question ## ]]\n")[1].split("\n")[0]

        class Obj:
            def __init__(self, **fields: Any) -> None:
                self.__dict__.update(fields)

        return Obj(
            choices=[Obj(message=Obj(content=REPLY.format(question)), finish_reason="stop")],
            usage=Obj(prompt_tokens=7, completion_tokens=3),
            model="echo-model-v2",
        )


class AsyncDictLM(BaseLM):
    async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return {"choices": [{"message": {"content": REPLY.format("async")}}], "usage": {}}


class CallOnlyLM(BaseLM):
    def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[str]:
        return [REPLY.format(f"call with {len(messages)} messages")]


def test_predict_calls_a_subclass_forward_with_its_options_and_counts_usage() -> None:
    lm = EchoLM(temperature=0.5)
    with dspex.context(lm=lm):
        prediction = dspex.Predict("question -> answer")(question="why")
    assert prediction.answer == "why"
    assert lm.seen[0]["temperature"] == 0.5 and "cache" not in lm.seen[0]
    assert lm.threads and threading.main_thread().name not in lm.threads  # forward ran off the loop
    assert prediction.usage.prompt_tokens == 7 and prediction.usage.completion_tokens == 3
    assert len(lm.history) == 1 and lm.history[0]["model"] == "echo-model"


def test_an_async_subclass_and_a_call_only_subclass_both_answer() -> None:
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=AsyncDictLM("async-model")):
        assert predict(question="q").answer == "async"
    with dspex.context(lm=CallOnlyLM("call-model")):
        assert predict(question="q").answer.startswith("call with ")


def test_direct_calls_return_output_texts() -> None:
    lm = EchoLM()
    assert lm(messages=[{"role": "user", "content": "[[ ## question ## ]]\nhi"}]) == [REPLY.format("hi")]
    assert asyncio.run(lm.acall("[[ ## question ## ]]\nho")) == [REPLY.format("ho")]


def test_forward_must_be_written() -> None:
    with pytest.raises(NotImplementedError, match="must override forward"):
        BaseLM("nothing")("hello")


def test_no_choices_is_a_clear_error() -> None:
    class Empty(BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return {"choices": []}

    with pytest.raises(ConfigurationError, match="returned no choices"):
        Empty("empty")("hello")


def test_dump_state_names_the_class_and_keeps_no_secret() -> None:
    lm = EchoLM(api_key="sk-secret", max_tokens=50, **{LM_CLASS_STATE_KEY: "evil.Module"})
    state = lm.dump_state()
    assert state[LM_CLASS_STATE_KEY] == f"{EchoLM.__module__}.{EchoLM.__qualname__}"
    assert state["max_tokens"] == 50 and "api_key" not in state and "sk-secret" not in repr(state)


def test_copy_changes_options_and_starts_a_fresh_history() -> None:
    lm = EchoLM(temperature=0.1)
    lm("[[ ## question ## ]]\nx")
    other = lm.copy(temperature=0.9, max_tokens=None)
    assert other.kwargs["temperature"] == 0.9 and "max_tokens" not in other.kwargs
    assert other.history == [] and len(lm.history) == 1 and lm.kwargs["temperature"] == 0.1


def test_an_lm_subclass_overriding_call_answers_predict_without_any_request() -> None:
    class SpyLM(dspex.LM):
        def __init__(self) -> None:
            super().__init__("openai/spy", api_base="http://127.0.0.1:9")  # never contacted
            self.seen: list[Any] = []

        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[str]:
            self.seen.append(messages)
            return [REPLY.format("spied")]

    class WithDefault(dspex.Signature):
        context: str = dspex.InputField(default="DEFAULT_CONTEXT")
        question: str = dspex.InputField()
        answer: str = dspex.OutputField()

    lm = SpyLM()
    assert dspex.Predict(WithDefault)(question="q", lm=lm).answer == "spied"
    assert "DEFAULT_CONTEXT" in lm.seen[0][-1]["content"]


class DeploymentLM(BaseLM):
    """A custom LM with its own state (module level, so a saved state can name it)."""

    def __init__(self, model: str, *, deployment: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.deployment = deployment

    def dump_state(self) -> dict[str, Any]:
        return {**super().dump_state(), "deployment": self.deployment}


def test_a_custom_lm_class_in_a_saved_state_loads_only_when_trusted() -> None:
    saved = dspex.Predict("question -> answer")
    saved.lm = DeploymentLM("custom", deployment="prod")
    state = saved.dump_state()
    assert state["lm"][LM_CLASS_STATE_KEY].endswith("test_base_lm.DeploymentLM")
    with pytest.raises(ConfigurationError, match="allow_unsafe_lm_state=True") as refused:
        dspex.Predict("question -> answer").load_state(state)
    assert isinstance(refused.value, ValueError)
    loaded = dspex.Predict("question -> answer").load_state(state, allow_unsafe_lm_state=True)
    assert isinstance(loaded.lm, DeploymentLM) and loaded.lm.deployment == "prod"


def test_a_dspex_lm_state_names_its_class_and_loads_without_trust() -> None:
    saved = dspex.Predict("question -> answer")
    saved.lm = dspex.LM("openai/gpt-4o-mini", temperature=1.0, api_key="sk-never-saved")
    state = saved.dump_state()
    assert state["lm"][LM_CLASS_STATE_KEY] == "dspex.clients.lm.LM" and "sk-never" not in repr(state)
    loaded = dspex.Predict("question -> answer").load_state(state)
    assert isinstance(loaded.lm, dspex.LM) and loaded.lm.kwargs["temperature"] == 1.0
    assert LM_CLASS_STATE_KEY not in loaded.lm.kwargs  # the marker is not a request option
