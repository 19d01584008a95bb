"""Building a retrievers.Embeddings index with the runtime up: the corpus is embedded on
EvalWorkers in chunks (each once, through the simulated LM over HTTP), and the vectors come
back in corpus order, the same as embedding it in this process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import dspex
from dspex.errors import ParallelExecutionError
from dspex.primitives.parallel import batch_runner
from dspex.retrievers import embeddings as embeddings_module
from dspex.runtime import seams
from dspex.simlm import SimLMServer, start_sim_lm
from dspex.simlm.embeddings import embed_texts

pytestmark = pytest.mark.ray

PASSAGES = [f"Passage {i}: the kingdom number {i} trades in coin {i % 37}." for i in range(2500)]


@pytest.fixture
def runtime_seams(ray_cluster: Any) -> Iterator[None]:
    seams.install()
    try:
        yield
    finally:
        seams.uninstall()


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=2)
    try:
        yield server
    finally:
        server.stop()


class NotHere:
    """An embedder that refuses to run in the driver: the work must happen on workers."""

    def __init__(self, driver: int) -> None:
        self.driver = driver

    def __call__(self, texts: list[str]) -> np.ndarray:
        if os.getpid() == self.driver:
            raise RuntimeError("embedded in the driver")
        return embed_texts(texts, 16)


def test_building_fans_out_exactly_once_in_order(runtime_seams: None, sim: SimLMServer) -> None:
    assert batch_runner() is not None
    chunks = -(-len(PASSAGES) // embeddings_module.FANOUT_CHUNK)
    embedder = dspex.Embedder("openai/sim-embed", api_base=sim.url, batch_size=250, caching=False)
    index = dspex.retrievers.Embeddings(corpus=PASSAGES, embedder=embedder, k=2)
    # Each chunk is split into batches of 250 on its worker; nothing is sent twice.
    size = embeddings_module.FANOUT_CHUNK
    per_chunk = [-(-min(size, len(PASSAGES) - i) // 250) for i in range(0, len(PASSAGES), size)]
    assert len(per_chunk) == chunks
    assert sim.stats()["by_path"]["/v1/embeddings"] == sum(per_chunk)
    expected = embed_texts(PASSAGES, 256)
    assert np.allclose(index.corpus_embeddings, expected, atol=1e-5)
    assert index(PASSAGES[1234]).indices[0] == 1234


def test_the_work_runs_on_workers_and_failures_are_reported(runtime_seams: None) -> None:
    index = dspex.retrievers.Embeddings(corpus=PASSAGES, embedder=NotHere(os.getpid()), k=1)
    assert index.corpus_embeddings.shape == (len(PASSAGES), 16)
    assert np.allclose(index.corpus_embeddings, embed_texts(PASSAGES, 16), atol=1e-5)

    def broken(texts: list[str]) -> np.ndarray:
        raise ValueError("the embedding model is down")

    with pytest.raises(ParallelExecutionError, match="the embedding model is down"):
        dspex.retrievers.Embeddings(corpus=PASSAGES, embedder=broken)


def test_small_corpora_and_no_runtime_stay_in_process(ray_cluster: Any) -> None:
    assert batch_runner() is None
    with pytest.raises(RuntimeError, match="embedded in the driver"):
        dspex.retrievers.Embeddings(corpus=PASSAGES, embedder=NotHere(os.getpid()))


class Searcher(dspex.Module):
    """Retrieve with the configured rm; says which process searched."""

    def __init__(self) -> None:
        super().__init__()
        self.retrieve = dspex.Retrieve(k=2)

    def forward(self, question: str) -> dspex.Prediction:
        return dspex.Prediction(passages=self.retrieve(question).passages, pid=os.getpid())


def test_the_configured_rm_travels_to_the_workers(runtime_seams: None, sim: SimLMServer) -> None:
    from dspex.simlm import datasets

    rows = datasets.load("facts", "dev")[:12]
    devset = [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]

    def found(example: dspex.Example, prediction: dspex.Prediction, trace: object = None) -> bool:
        return any(example.answer.lower() in p.lower() for p in prediction.passages)

    with dspex.context(rm=dspex.ColBERTv2(url=f"{sim.base_url}/search")):
        result = dspex.Evaluate(devset=devset, metric=found, num_threads=4)(Searcher())
    assert result.score >= 75.0
    assert {prediction.pid for _, prediction, _ in result.results} - {os.getpid()}
