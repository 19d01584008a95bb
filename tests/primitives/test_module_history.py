"""`Module.history`: the LM calls made inside a module, shared entries, bounds, copies,
against the simulated LM over real HTTP on 127.0.0.1."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator

import cloudpickle
import pytest

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.simlm import SimLMServer, start_sim_lm

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server




class Program(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cot = dspex.ChainOfThought("question -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        return self.cot(question=question)


def test_each_caller_records_the_same_entry(sim: SimLMServer) -> None:
    program = Program()
    with dspex.context(lm=dspex.LM("openai/sim", api_base=sim.url, cache=False)):
        program(question="first")
        program.cot(question="second")  # only the sub-module and its predictor
    assert [len(m.history) for m in (program, program.cot, program.cot.predict)] == [1, 2, 2]
    assert program.history[0] is program.cot.history[0] is program.cot.predict.history[0]
    assert program.cot.history[1] is GLOBAL_HISTORY[-1]
    assert "first" in str(program.history[0]["messages"])


async def test_async_calls_record_too(sim: SimLMServer) -> None:
    program = Program()
    async with dspex.context(lm=dspex.LM("openai/sim", api_base=sim.url, cache=False)):
        await program.acall(question="q")
    assert len(program.history) == 1 and len(program.cot.predict.history) == 1


def test_disable_history_and_max_history_size(sim: SimLMServer) -> None:
    program = Program()
    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False)
    with dspex.context(lm=lm, disable_history=True):
        program(question="hidden")
    assert program.history == [] and lm.history == []
    with dspex.context(lm=lm, max_history_size=2):
        for i in range(3):
            program(question=f"q{i}")
    assert len(program.history) == 2 and len(lm.history) == 2
    assert "q2" in str(program.history[-1]["messages"])
    with dspex.context(lm=lm, max_history_size=0):
        program(question="none kept")
    assert len(program.history) == 2  # 0: modules and LMs keep nothing more
    assert "none kept" in str(GLOBAL_HISTORY[-1]["messages"])  # the global history still does


def test_copies_and_pickles_leave_the_history_behind(sim: SimLMServer) -> None:
    program = Program()
    with dspex.context(lm=dspex.LM("openai/sim", api_base=sim.url, cache=False)):
        program(question="q")
    assert copy.deepcopy(program).history == [] and program.history
    restored = cloudpickle.loads(cloudpickle.dumps(program))  # as Ray ships it
    assert restored.history == [] and restored.cot.predict.history == []
    out = io.StringIO()
    program.inspect_history(file=out)
    assert "User message:" in out.getvalue() and "q" in out.getvalue()


def test_a_module_without_init_has_a_history() -> None:
    class Bare(dspex.Module):
        def __init__(self) -> None:  # no super().__init__()
            pass

    assert Bare().history == []
