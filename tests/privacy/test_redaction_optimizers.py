"""An optimizer run with redactors: its requests, its bootstrapped demos and everything
its run store holds carry placeholders, while its metric sees the real values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from privacy_helpers import RecordingServer, assert_none_in, pii_bytes

import dspex
from dspex.clients.cache import LMCache
from dspex.optimizers.run_store import RunStore
from dspex.privacy import EMAIL, PHONE

PEOPLE = [
    ("ann@example.com", "+1 (415) 555-0101"),
    ("bob@example.org", "+44 20 7946 0958"),
    ("cy@example.net", "415-555-0199"),
    ("di@example.io", "+33 6 12 34 56 78"),
]
PII = pii_bytes(*[value for person in PEOPLE for value in person])


@pytest.fixture(autouse=True)
def _runs_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_RUNS_DB", str(tmp_path / "default-runs.sqlite3"))


def test_a_bootstrap_run_stores_and_sends_placeholders_only(
    server: RecordingServer, isolated_cache: LMCache, tmp_path: Path
) -> None:
    trainset = [
        dspex.Example(message=f"I am {e}, phone {p}", reply=f"seen: {e} {p}").with_inputs("message")
        for e, p in PEOPLE
    ]
    scored: list[str] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        scored.append(prediction.reply)
        return bool(example.reply == prediction.reply)

    server.needs_demos = True  # so the best program is one with (bootstrapped) demos
    store = RunStore(tmp_path / "runs.sqlite3")
    lm = dspex.LM("openai/test-model", api_base=server.base_url, api_key="k", num_retries=0)
    dspex.configure(lm=lm, redactors=[EMAIL, PHONE])
    optimizer = dspex.BootstrapFewShotWithRandomSearch(
        metric=metric, max_bootstrapped_demos=2, max_labeled_demos=2, num_candidate_programs=1, num_threads=1
    )
    compiled = optimizer.compile(dspex.Predict("message -> reply"), trainset=trainset, run_id="private", store=store)

    assert server.raw, "the optimizer made no request"
    assert_none_in(server.everything_received, PII)
    assert any(reply.startswith("seen: ") and "@" in reply for reply in scored)  # the metric saw real values
    stored = store.get_program("private")
    assert stored is not None and "<EMAIL_" in stored
    assert_none_in(stored, PII)
    assert_none_in((tmp_path / "runs.sqlite3").read_bytes(), PII)
    # Demos bootstrapped from traces hold placeholders, the labeled ones are the trainset's own.
    # The program returned in this process keeps the trainset's own demos as given.
    assert any(PEOPLE[0][0] in str(dict(d)) or PEOPLE[1][0] in str(dict(d)) for d in compiled.demos)


def test_demos_bootstrapped_from_traces_hold_placeholders(server: RecordingServer, isolated_cache: LMCache) -> None:
    trainset = [
        dspex.Example(message=f"I am {e}, phone {p}", reply=f"seen: {e} {p}").with_inputs("message")
        for e, p in PEOPLE
    ]
    dspex.configure(lm=dspex.LM("openai/test-model", api_base=server.base_url, api_key="k"), redactors=[EMAIL, PHONE])
    optimizer = dspex.BootstrapFewShot(
        metric=lambda example, prediction, trace=None: example.reply == prediction.reply,
        max_bootstrapped_demos=2,
        max_labeled_demos=0,
    )
    compiled = optimizer.compile(dspex.Predict("message -> reply"), trainset=trainset)
    assert len(compiled.demos) == 2
    for demo in compiled.demos:
        assert demo.message == "I am <EMAIL_1>, phone <PHONE_1>"
        assert demo.reply == "seen: <EMAIL_1> <PHONE_1>"
    assert_none_in(server.everything_received, PII)
