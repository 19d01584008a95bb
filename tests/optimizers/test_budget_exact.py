"""``max_lm_calls=``/``max_cost=`` hold exactly in-process: the simulated LM server's own
request count never passes the budget, retries and adapter fallbacks included.

The server fails the first attempt of every distinct request (``fail_first=1``), so each
answered call costs two HTTP requests, and malforms some replies, so the ChatAdapter
falls back to a second (JSON) call. A budget that reserved once per predictor call, or
charged after the fact, lets roughly twice the budget through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.optimizers import BootstrapFewShot, BootstrapRS, RunStore
from dspex.optimizers.mipro import MIPROv2
from dspex.primitives.settings import settings
from dspex.simlm import SimLMServer, datasets, start_sim_lm

FAULTS = {"fail_first": 1, "malformed_rate": 0.15}


def examples(split: str, n: int, start: int = 0) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)  # type: ignore[arg-type]
    return [
        dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question")
        for r in rows
    ][start : start + n]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


@pytest.fixture
def server() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=0, faults=FAULTS) as running:
        yield running


def use_lm(server: SimLMServer, **options: Any) -> Iterator[dspex.LM]:
    lm = dspex.LM("openai/sim-lm", api_base=server.url, cache=False, num_retries=2, **options)
    previous = settings.lm
    dspex.configure(lm=lm)
    try:
        yield lm
    finally:
        dspex.configure(lm=previous)


@pytest.fixture
def lm(server: SimLMServer) -> Iterator[dspex.LM]:
    yield from use_lm(server)


def random_search() -> Any:
    return BootstrapRS(
        exact, max_bootstrapped_demos=2, max_labeled_demos=4, num_candidate_programs=6, num_threads=8
    )


def mipro() -> Any:
    return MIPROv2(metric=exact, auto=None, num_candidates=4, num_threads=8)


def bootstrap() -> Any:
    return BootstrapFewShot(metric=exact, max_bootstrapped_demos=8, max_labeled_demos=0, num_threads=8)


OPTIMIZERS: dict[str, tuple[Callable[[], Any], dict[str, Any], int]] = {
    "random_search": (random_search, {}, 60),
    "mipro": (mipro, {"num_trials": 6, "minibatch_size": 10}, 70),
    "bootstrap": (bootstrap, {}, 9),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_max_lm_calls_bounds_the_requests_that_reach_the_server(
    name: str, lm: dspex.LM, server: SimLMServer, tmp_path: Path
) -> None:
    make, options, limit = OPTIMIZERS[name]
    store = RunStore(tmp_path / "runs.sqlite3")
    program = make().compile(
        dspex.ChainOfThought("question -> answer"),
        trainset=examples("train", 24),
        valset=examples("dev", 24),
        max_lm_calls=limit,
        store=store,
        run_id=name,
        **options,
    )

    sent = server.stats()["total"]
    info = program.run_info
    assert sent <= limit
    assert info.status == "budget_limited" and store.get_run(name).budget_limited
    assert isinstance(program, dspex.ChainOfThought)
    # The budget counted every request that reached the server (a retry is a request).
    assert sent <= info.lm_calls <= limit
    assert server.stats()["by_status"].get("500", 0) > 0  # retries really happened


def test_max_cost_reserves_the_worst_case_and_holds(server: SimLMServer, tmp_path: Path) -> None:
    price = (1.0, 4.0)  # USD per 1M tokens
    for _ in use_lm(server, price=price, max_tokens=200):
        program = random_search().compile(
            dspex.ChainOfThought("question -> answer"),
            trainset=examples("train", 24),
            valset=examples("dev", 24),
            max_cost=0.004,
            store=RunStore(tmp_path / "runs.sqlite3"),
        )

    stats = server.stats()
    billed = (stats["prompt_tokens"] * price[0] + stats["completion_tokens"] * price[1]) / 1e6
    assert 0 < billed <= 0.004
    assert program.run_info.status == "budget_limited"
    # Settled to the real cost (a request cancelled in flight keeps its worst case).
    assert billed <= program.run_info.cost + 1e-9 and program.run_info.cost <= 0.004


def test_max_cost_without_max_tokens_is_refused_before_any_request(
    server: SimLMServer, tmp_path: Path
) -> None:
    for _ in use_lm(server, price=(1.0, 4.0)):
        with pytest.raises(dspex.ConfigurationError, match="max_tokens"):
            BootstrapFewShot(metric=exact, num_threads=1).compile(
                dspex.Predict("question -> answer"),
                trainset=examples("train", 4),
                max_cost=1.0,
                store=RunStore(tmp_path / "runs.sqlite3"),
            )
    assert server.stats()["total"] == 0
