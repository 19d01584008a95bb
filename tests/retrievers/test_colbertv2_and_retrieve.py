"""dspex.ColBERTv2 against the simulated LM's ColBERTv2-style /search over real HTTP (GET and
POST, records, cache, retries, typed errors), and dspex.Retrieve with the configured rm."""

from __future__ import annotations

import pickle
import socket
from typing import Any

import numpy as np
import pytest

import dspex
from dspex.clients.cache import LMCache
from dspex.errors import (
    ConfigurationError,
    LMServerError,
    LMTransportError,
    NoRetrieverError,
    RetrievalServerError,
)
from dspex.retrievers import ColBERTv2, Embeddings, PassageRecord
from dspex.simlm import SimLMServer, datasets

QUESTION = datasets.load("facts", "dev")[0]["question"]
ANSWER = str(datasets.load("facts", "dev")[0]["answer"])


def _searches(sim: SimLMServer) -> int:
    return int(sim.stats()["by_path"].get("/search", 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_get_search_returns_records_readable_as_attributes_and_keys(sim: SimLMServer, isolated_cache: LMCache) -> None:
    search = dspex.ColBERTv2(url=f"{sim.base_url}/search")
    top = search(QUESTION, k=3)
    assert len(top) == 3 and all(isinstance(r, PassageRecord) for r in top)
    assert top[0].long_text == top[0]["long_text"]
    assert isinstance(top[0].pid, int) and top[0].score >= top[1].score
    assert any(ANSWER.lower() in r.long_text.lower() for r in top)
    assert search(QUESTION, k=3, simplify=True) == [r.long_text for r in top]
    with pytest.raises(AttributeError, match="no 'nope'"):
        _ = top[0].nope
    assert pickle.loads(pickle.dumps(top[0])) == top[0]


def test_post_requests_and_port(sim: SimLMServer, isolated_cache: LMCache) -> None:
    search = ColBERTv2(url="http://127.0.0.1", port=sim.port, post_requests=True)
    assert search.url == f"http://127.0.0.1:{sim.port}"
    post = ColBERTv2(url=f"{sim.base_url}/search", post_requests=True)
    get = ColBERTv2(url=f"{sim.base_url}/search", cache=False)
    assert [r.pid for r in post(QUESTION, k=2)] == [r.pid for r in get(QUESTION, k=2)]


def test_searches_are_cached(sim: SimLMServer, isolated_cache: LMCache) -> None:
    search = ColBERTv2(url=f"{sim.base_url}/search")
    first = search(QUESTION, k=2)
    assert search(QUESTION, k=2) == first
    assert ColBERTv2(url=f"{sim.base_url}/search")(QUESTION, k=2) == first
    assert _searches(sim) == 1
    search(QUESTION, k=3)  # another k, another search
    ColBERTv2(url=f"{sim.base_url}/search", cache=False)(QUESTION, k=2)
    assert _searches(sim) == 3


def test_server_failures_are_retried(sim: SimLMServer, isolated_cache: LMCache) -> None:
    sim.set_faults(fail_first=2, fail_status=500)
    assert len(ColBERTv2(url=f"{sim.base_url}/search")(QUESTION, k=1)) == 1
    assert _searches(sim) == 3
    sim.set_faults(outage=True, retry_after=0)
    with pytest.raises(LMServerError, match="503"):
        ColBERTv2(url=f"{sim.base_url}/search", num_retries=1)("another query", k=1)


def test_error_answers_and_unreachable_servers_are_typed(sim: SimLMServer, isolated_cache: LMCache) -> None:
    with pytest.raises(RetrievalServerError, match="'k' must be from 1 to 100"):
        ColBERTv2(url=f"{sim.base_url}/search")(QUESTION, k=500)
    assert _searches(sim) == 1  # not retried
    with pytest.raises(ValueError):  # DSPy raised ValueError: still catchable as one
        ColBERTv2(url=f"{sim.base_url}/search")(QUESTION, k=500)
    with pytest.raises(dspex.LMError, match="HTTP 404"):
        ColBERTv2(url=f"{sim.base_url}/no-such-index", num_retries=0)(QUESTION)
    with pytest.raises(LMTransportError, match="could not reach"):
        ColBERTv2(url=f"http://127.0.0.1:{_free_port()}/search", num_retries=0)(QUESTION)
    with pytest.raises(ConfigurationError):
        ColBERTv2(url="ftp://example")
    with pytest.raises(ConfigurationError):
        ColBERTv2(url=f"{sim.base_url}/search")("", k=1)


def test_error_bodies_with_status_200(isolated_cache: LMCache) -> None:
    from dspex.clients.transport import HTTPResponse
    from dspex.retrievers.colbertv2 import _topk_of

    with pytest.raises(RetrievalServerError, match="connection failed"):
        _topk_of(HTTPResponse(200, {}, b'{"error": true, "message": "connection failed"}'), "http://h/x", 3)
    with pytest.raises(RetrievalServerError, match="no 'topk'"):
        _topk_of(HTTPResponse(200, {}, b'{"results": []}'), "http://h/x", 3)
    records = _topk_of(HTTPResponse(200, {}, b'{"topk": [{"text": "doc1", "score": 0.9}]}'), "http://h/x", 3)
    assert records == [{"text": "doc1", "score": 0.9, "long_text": "doc1"}]


def test_retrieve_uses_the_configured_rm(sim: SimLMServer, isolated_cache: LMCache) -> None:
    retrieve = dspex.Retrieve(k=2)
    with pytest.raises(NoRetrieverError, match="configure"):
        retrieve(QUESTION)
    with dspex.context(rm=ColBERTv2(url=f"{sim.base_url}/search")):
        found = retrieve(QUESTION)
        assert len(found.passages) == 2 and all(isinstance(p, str) for p in found.passages)
        assert len(retrieve(QUESTION, k=4).passages) == 4
    corpus = ["The cat sat.", "The dog ran.", "Birds sing."]

    def by_animal(texts: list[str]) -> np.ndarray:
        return np.array([[("cat" in t) * 1.0, ("dog" in t) * 1.0, 0.1] for t in texts])

    dspex.configure(rm=Embeddings(corpus=corpus, embedder=by_animal, k=5))
    assert retrieve("a dog").passages[0] == "The dog ran."
    assert len(retrieve("a dog").passages) == 2  # Retrieve's k wins over the retriever's

    def plain(query: str, k: int) -> list[Any]:
        return [{"text": f"{query} {i}"} for i in range(k)]

    with dspex.context(rm=plain):
        assert retrieve("q").passages == ["q 0", "q 1"]
    with pytest.raises(ConfigurationError, match="rm"):
        dspex.configure(rm=42)
    with pytest.raises(ConfigurationError):
        dspex.Retrieve(k=0)


async def test_retrieve_acall(sim: SimLMServer, isolated_cache: LMCache) -> None:
    with dspex.context(rm=ColBERTv2(url=f"{sim.base_url}/search")):
        found = await dspex.Retrieve(k=3).acall(QUESTION)
    assert len(found.passages) == 3


def test_retrieve_is_not_a_learnable_predictor() -> None:
    class RAG(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.retrieve = dspex.Retrieve(k=2)
            self.answer = dspex.Predict("context, question -> answer")

    assert [name for name, _ in RAG().named_predictors()] == ["answer"]
    assert dspex.Retrieve(k=4).dump_state() == {"k": 4}
    assert dspex.Retrieve().load_state({"k": 5}).k == 5


def test_dspy_import_paths() -> None:
    from dspex.dsp.colbertv2 import ColBERTv2 as from_dsp
    from dspex.dsp.colbertv2 import dotdict

    assert from_dsp is dspex.ColBERTv2 is ColBERTv2
    assert dotdict(a=1).a == 1


def test_dspy_request_functions(sim: SimLMServer, isolated_cache: LMCache) -> None:
    from dspex.dsp.colbertv2 import colbertv2_get_request_v2, colbertv2_post_request_v2

    got = colbertv2_get_request_v2(f"{sim.base_url}/search", QUESTION, k=2)
    posted = colbertv2_post_request_v2(f"{sim.base_url}/search", QUESTION, k=2)
    assert [r["pid"] for r in got] == [r["pid"] for r in posted]
    assert all(type(r) is dict and r["long_text"] == r["text"] for r in got)
