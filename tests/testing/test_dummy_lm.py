"""DummyLM answers from a script in the adapter's reply format; DummyVectorizer is deterministic."""

from __future__ import annotations

import math

import dspex
from dspex.testing import DummyLM, DummyVectorizer
from dspex.testing.dummy_lm import EXHAUSTED


def test_a_list_script_answers_in_order_then_says_it_has_no_more() -> None:
    with dspex.context(lm=DummyLM([{"answer": "red"}, {"answer": "blue"}])):
        predict = dspex.Predict("question -> answer")
        answers = [predict(question="colour?").answer for _ in range(3)]
    assert answers == ["red", "blue", EXHAUSTED["answer"]]


def test_a_dict_script_answers_by_text_in_the_last_message() -> None:
    lm = DummyLM({"capital of France": {"reasoning": "known", "answer": "Paris"}})
    with dspex.context(lm=lm):
        cot = dspex.ChainOfThought("question -> answer")
        assert cot(question="What is the capital of France?").answer == "Paris"
        assert dspex.Predict("question -> answer")(question="else?").answer == EXHAUSTED["answer"]


def test_follow_examples_repeats_what_a_demo_answered_for_the_same_input() -> None:
    predict = dspex.Predict("question -> answer")
    predict.demos = [dspex.Example(question="2+2?", answer="four")]
    with dspex.context(lm=DummyLM([{"answer": "scripted"}], follow_examples=True)):
        assert predict(question="2+2?").answer == "four"
        assert predict(question="3+3?").answer == "scripted"  # no demo for it: the script


def test_json_adapter_replies_are_json_and_typed_outputs_parse() -> None:
    lm = DummyLM([{"answer": 42}], adapter=dspex.JSONAdapter())
    with dspex.context(lm=lm, adapter=dspex.JSONAdapter()):
        prediction = dspex.Predict("question -> answer: int")(question="six times seven?")
    assert prediction.answer == 42
    assert lm.history[-1]["outputs"] == ['{"answer": 42}']


def test_n_completions_each_take_the_next_scripted_answer() -> None:
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    assert [text.split("\n")[1] for text in lm("hi", n=2)] == ["a", "b"]


def test_dspy_import_paths_reach_the_same_classes() -> None:
    from dspex.utils import DummyLM as FromUtils
    from dspex.utils.dummies import DummyLM as FromDummies
    from dspex.utils.dummies import DummyVectorizer as Vectorizer

    assert FromUtils is FromDummies is DummyLM and Vectorizer is DummyVectorizer


def test_dummy_vectorizer_is_deterministic_normalised_and_similarity_preserving() -> None:
    vectorize = DummyVectorizer(dimensions=64)
    a, b, c = vectorize(["the cat sat", "the cat sat down", "quantum chromodynamics"])
    assert (vectorize(["the cat sat"])[0] == a).all()
    assert math.isclose(float((a * a).sum()), 1.0, rel_tol=1e-5)
    assert float(a @ b) > float(a @ c)
