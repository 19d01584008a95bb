from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from dspex.errors import ConfigurationError
from dspex.primitives import Module, Prediction

from .fakes import EchoPredict, FakeLM, FakePredictor


class Block(Module):
    def __init__(self) -> None:
        self.predict = FakePredictor("block")


class Program(Module):
    def __init__(self) -> None:
        self.first = FakePredictor("first")
        self.layers = [Block(), FakePredictor("layer1")]
        self.tools = {"search": FakePredictor("search"), "calc": Block()}
        self.pair = (FakePredictor("pair0"),)
        self.config = {"depth": 2}

    def forward(self) -> Prediction:
        return Prediction()


EXPECTED_NAMES = [
    "first",
    "layers[0].predict",
    "layers[1]",
    "tools['search']",
    "tools['calc'].predict",
    "pair[0]",
]


def test_named_parameters_walks_attributes_lists_dicts_tuples_in_order() -> None:
    program = Program()
    named = program.named_parameters()
    assert [name for name, _ in named] == EXPECTED_NAMES
    assert named[0][1] is program.first
    assert program.parameters() == [p for _, p in named]
    assert program.named_predictors() == named
    assert program.predictors() == program.parameters()


def test_a_shared_parameter_is_reported_once_and_cycles_end() -> None:
    program = Program()
    program.alias = program.first
    program.layers[0].parent = program  # cycle back to the root
    program.layers.append(program.layers)  # a list containing itself
    assert [name for name, _ in program.named_parameters()] == EXPECTED_NAMES


def test_compiled_sub_modules_are_frozen() -> None:
    program = Program()
    program.layers[0]._compiled = True
    assert "layers[0].predict" not in [name for name, _ in program.named_parameters()]


def test_a_predictor_module_reports_itself() -> None:
    predict = EchoPredict()
    assert predict.named_parameters() == [("self", predict)]

    class Wrapper(Module):
        def __init__(self) -> None:
            self.predict = EchoPredict()

    assert [n for n, _ in Wrapper().named_parameters()] == ["predict"]


def test_named_sub_modules_is_breadth_first_from_self() -> None:
    program = Program()
    program.deep = Block()
    program.deep.child = Block()
    names = [name for name, _ in program.named_sub_modules()]
    assert names == [
        "self",
        "self.deep",
        "self.layers[0]",
        "self.tools[calc]",  # named_sub_modules leaves dict keys unquoted, as DSPy does
        "self.deep.child",
    ]
    only_predictors = program.named_sub_modules(type_=FakePredictor)
    assert [n for n, _ in only_predictors][:2] == ["self.first", "self.layers[1]"]
    program.deep._compiled = True
    skipped = [n for n, _ in program.named_sub_modules(skip_compiled=True)]
    assert "self.deep" in skipped and "self.deep.child" not in skipped


def test_deepcopy_is_independent() -> None:
    program = Program()
    program.first.demos.append({"q": "1"})
    clone = program.deepcopy()
    clone.first.demos.append({"q": "2"})
    clone.tools["calc"].predict.instructions = "changed"
    clone.config["depth"] = 9
    assert program.first.demos == [{"q": "1"}]
    assert program.tools["calc"].predict.instructions == "block"
    assert program.config == {"depth": 2}
    assert type(clone) is Program and clone.callbacks == []


def test_deepcopy_shares_lms_and_uncopyable_values_but_copies_around_them() -> None:
    program = Program()
    lm = FakeLM()
    program.set_lm(lm)
    program.lock = threading.Lock()
    program.stuff = [FakePredictor("x"), threading.Lock()]  # uncopyable list member
    program.stuff[0].demos.append("d")
    program.same = program.first
    with pytest.raises(TypeError):
        copy.deepcopy(lm)  # the fake LM really cannot be deep-copied
    clone = program.deepcopy()
    assert clone.first.lm is lm and clone.tools["calc"].predict.lm is lm
    assert clone.lock is program.lock
    assert clone.stuff is not program.stuff and clone.stuff[1] is program.stuff[1]
    clone.stuff[0].demos.append("e")
    assert program.stuff[0].demos == ["d"]
    assert clone.same is clone.first and clone.first is not program.first
    assert copy.deepcopy(program).first.lm is lm  # copy.deepcopy takes the same path


def test_reset_copy_resets_only_the_copy() -> None:
    program = Program()
    program.first.demos.append("d")
    program.set_lm(FakeLM())
    fresh = program.reset_copy()
    assert all(p.demos == [] and p.lm is None for p in fresh.predictors())
    assert program.first.demos == ["d"] and program.first.lm is not None


def test_set_lm_and_get_lm() -> None:
    program = Program()
    with pytest.raises(ConfigurationError, match="no predictor with an LM"):
        program.get_lm()
    lm = FakeLM()
    program.set_lm(lm)
    assert all(p.lm is lm for p in program.predictors())
    assert program.get_lm() is lm
    program.pair[0].lm = FakeLM("other")
    with pytest.raises(ConfigurationError, match=r"different LMs.*pair\[0\]"):
        program.get_lm()
    program.pair[0].lm = None
    with pytest.raises(ConfigurationError, match="different LMs"):
        program.get_lm()


def test_get_lm_without_predictors() -> None:
    with pytest.raises(ConfigurationError, match="no predictor"):
        Module().get_lm()


def test_repr_shows_the_predictor_tree() -> None:
    text = repr(Program())
    assert text.startswith("Program(\n")
    assert "  layers[0].predict = FakePredictor('block')" in text
    assert "  tools['search'] = FakePredictor('search')" in text
    assert repr(Module()) == "Module()"

    class Holder(Module):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    nested = repr(Holder(Program()))
    assert "inner.first = FakePredictor('first')" in nested
