"""The simulated LM's retrieval side over real HTTP: /v1/embeddings, the ColBERTv2-style
/search over its bundled corpus, faults on both, and the oracle reading retrieved context."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import numpy as np
import pytest

from dspex.simlm import SimLMServer, corpus, datasets, start_sim_lm
from dspex.simlm.embeddings import embed_texts
from dspex.simlm.oracle import OracleConfig, correct_probability, find_record
from dspex.simlm.prompt import Field, ParsedPrompt, SystemSpec
from dspex.simlm.typespec import parse_type


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=1)
    try:
        yield server
    finally:
        server.stop()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read())


def test_embeddings_endpoint_speaks_openai(sim: SimLMServer) -> None:
    status, body = _post(f"{sim.url}/embeddings", {"model": "sim-embed", "input": ["a cat", "a dog"]})
    assert status == 200
    assert [row["index"] for row in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 256
    assert body["usage"]["prompt_tokens"] > 0
    status, body = _post(f"{sim.url}/embeddings", {"model": "m", "input": "one text", "dimensions": 32})
    assert status == 200 and len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 32


@pytest.mark.parametrize(
    "body",
    [{"model": "m", "input": []}, {"model": "m", "input": [1]}, {"input": ["x"]}, {"model": "m", "input": "x", "dimensions": 2}],
)
def test_embeddings_endpoint_rejects_bad_requests(sim: SimLMServer, body: dict) -> None:
    status, answer = _post(f"{sim.url}/embeddings", body)
    assert status == 400 and answer["error"]["message"]


def test_embeddings_are_deterministic_and_similarity_follows_overlap() -> None:
    a, b, c = embed_texts(["Queen Ada rules Ulmemoor", "Queen Ada rules Ulmemor", "the price of wheat"])
    assert np.allclose(embed_texts(["Queen Ada rules Ulmemoor"])[0], a)
    assert a @ b > 0.8 > 0.3 > abs(a @ c)
    assert np.allclose(np.linalg.norm(embed_texts(["x y", ""]), axis=1), [1.0, 0.0])


def test_corpus_states_every_fact_once_plus_distractors() -> None:
    passages = corpus.passages()
    facts = datasets.load("facts", "train") + datasets.load("facts", "dev")
    assert len(passages) == len(facts) + 120  # one distractor per kingdom
    assert [p.pid for p in passages] == list(range(len(passages)))
    texts = [p.text for p in passages]
    for row in random.Random(0).sample(facts, 40):
        assert corpus.fact_passage(row["question"], row["answer"]) in texts
    distractors = texts[len(facts) :]
    assert all("kingdom of" in t for t in distractors)


def test_search_get_and_post_find_the_passage_with_the_answer(sim: SimLMServer) -> None:
    dev = datasets.load("facts", "dev")
    found = 0
    for row in dev[:50]:
        status, body = _get(f"{sim.base_url}/search?{urlencode({'query': row['question'], 'k': 3})}")
        assert status == 200 and body["query"] == row["question"]
        topk = body["topk"]
        assert [r["rank"] for r in topk] == [1, 2, 3]
        assert topk[0]["score"] >= topk[1]["score"] >= topk[2]["score"]
        assert all(r["text"] == r["long_text"] and isinstance(r["pid"], int) for r in topk)
        found += any(str(row["answer"]).lower() in r["long_text"].lower() for r in topk)
    assert found >= 45  # recall@3 over the first 50 dev questions
    status, body = _post(f"{sim.base_url}/search", {"query": dev[0]["question"], "k": 2})
    assert status == 200 and len(body["topk"]) == 2


@pytest.mark.parametrize("query", ["k=3", "query=&k=3", "query=x&k=0", "query=x&k=101", "query=x&k=many"])
def test_search_errors_in_colbert_shape(sim: SimLMServer, query: str) -> None:
    status, body = _get(f"{sim.base_url}/search?{query}")
    assert status == 400 and body["error"] is True and body["message"]


def test_faults_apply_to_retrieval_endpoints(sim: SimLMServer) -> None:
    sim.set_faults(outage=True, retry_after=0)
    assert _get(f"{sim.base_url}/search?query=x&k=1")[0] == 503
    assert _post(f"{sim.url}/embeddings", {"model": "m", "input": ["x"]})[0] == 503
    sim.set_faults()
    assert _get(f"{sim.base_url}/search?query=x&k=1")[0] == 200
    assert sim.stats()["by_path"]["/search"] == 2


def _prompt(inputs: dict[str, str]) -> ParsedPrompt:
    spec = SystemSpec(
        inputs=tuple(Field(name, parse_type("str")) for name in inputs),
        outputs=(Field("answer", parse_type("str")),),
    )
    return ParsedPrompt(system=spec, json_mode=False, inputs=inputs)


def test_oracle_answers_better_with_the_answer_in_context() -> None:
    row = datasets.load("facts", "dev")[0]
    record = find_record({"question": row["question"]})
    assert record is not None
    config = OracleConfig()
    answer = Field("answer", parse_type("str"))
    bare = correct_probability(_prompt({"question": row["question"]}), record, answer, config)
    right = corpus.fact_passage(row["question"], row["answer"])
    with_context = correct_probability(
        _prompt({"context": f"[1] «{right}»", "question": row["question"]}), record, answer, config
    )
    wrong = correct_probability(
        _prompt({"context": "[1] «Travellers remember its fairs.»", "question": row["question"]}),
        record,
        answer,
        config,
    )
    assert with_context == pytest.approx(min(bare + config.context_gain, config.p_max))
    assert wrong == bare
