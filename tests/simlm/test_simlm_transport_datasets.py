"""The in-process transport and the bundled datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simlm_helpers import CHAT_URL, qa_messages

from dspex.clients.transport import Transport
from dspex.errors import LMTimeoutError
from dspex.simlm import SimTransport, datasets
from dspex.simlm.make_datasets import DATA_DIR, SPLITS, build


def _body(question: str = "What is 2 + 2?", **params: object) -> bytes:
    return json.dumps({"model": "sim", "messages": qa_messages(question), **params}).encode()


async def test_transport_implements_the_protocol_and_counts() -> None:
    transport = SimTransport(seed=1, faults={"fail_first": 1, "fail_status": 429, "retry_after": 3})
    assert isinstance(transport, Transport)
    first = await transport.post(CHAT_URL, headers={}, body=_body(), timeout=5)
    second = await transport.post(CHAT_URL, headers={}, body=_body(), timeout=5)
    assert (first.status, first.headers["Retry-After"]) == (429, "3")
    assert second.status == 200
    stats = transport.stats()
    assert stats["by_status"] == {"429": 1, "200": 1} and stats["faults"] == {"fail_first": 1}
    await transport.aclose()


async def test_transport_raises_timeout_for_a_hung_request() -> None:
    transport = SimTransport(faults={"timeout_rate": 1.0, "hang_seconds": 30})
    with pytest.raises(LMTimeoutError):
        await transport.post(CHAT_URL, headers={}, body=_body(), timeout=0.05)
    stats = transport.stats()
    assert stats["in_flight"] == 0 and stats["by_status"] == {"abandoned": 1}
    transport.set_faults()
    assert (await transport.post(CHAT_URL, headers={}, body=_body(), timeout=5)).status == 200


def test_dataset_names_sizes_and_fields() -> None:
    assert datasets.names() == ["arithmetic", "facts", "sentiment"]
    for name, (train, dev) in SPLITS.items():
        train_rows, dev_rows = datasets.load(name, "train"), datasets.load(name, "dev")
        assert (len(train_rows), len(dev_rows)) == (train, dev)
        assert set(train_rows[0]) == {"question", "answer", "task"}
        assert not {r["question"] for r in train_rows} & {r["question"] for r in dev_rows}
    assert all(isinstance(r["answer"], int) for r in datasets.load("arithmetic", "dev"))
    assert {r["answer"] for r in datasets.load("sentiment")} == {"positive", "negative", "neutral"}
    with pytest.raises(KeyError):
        datasets.load("nope")


def test_a_sentiment_review_alone_finds_its_example() -> None:
    # A classifier's input is the review itself, not the dataset's question about it.
    row = datasets.load("sentiment", "dev")[0]
    review = row["question"].split(": ", 1)[1].strip('"')
    found = datasets.lookup(f"  {review.upper()} ")
    assert found is not None
    assert (found.question, found.answer) == (row["question"], row["answer"])
    assert datasets.lookup(review[:-5]) is None  # only the whole review counts


def test_arithmetic_answers_are_right() -> None:
    for row in datasets.load("arithmetic") + datasets.load("arithmetic", "dev"):
        a, op, b = row["question"].removeprefix("What is ").rstrip("?").split()
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert row["answer"] == expected


def test_shipped_files_match_the_generator() -> None:
    for name in SPLITS:
        shipped = [
            json.loads(line) for line in Path(DATA_DIR / f"{name}.jsonl").read_text().splitlines()
        ]
        assert shipped == build(name)
