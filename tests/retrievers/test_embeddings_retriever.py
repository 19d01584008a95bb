"""dspex.retrievers.Embeddings: exact numpy search, FAISS for large corpora, save/load, typed
errors, and an index over the simulated LM's corpus embedded over real HTTP."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import dspex
from dspex.clients.cache import LMCache
from dspex.errors import (
    ConfigurationError,
    EmbeddingDimensionError,
    EmptyCorpusError,
    SavedFileError,
)
from dspex.retrievers import Embeddings, EmbeddingsWithScores
from dspex.simlm import SimLMServer, corpus, datasets

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False

ANIMALS = ["The cat sat on the mat.", "The dog barked at the mailman.", "Birds fly in the sky."]


def by_animal(texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        lowered = text.lower()
        rows.append([float("cat" in lowered), float("dog" in lowered), float("bird" in lowered) + 0.1])
    return np.array(rows, dtype=np.float32)


def test_search_returns_passages_and_indices_best_first() -> None:
    search = Embeddings(corpus=ANIMALS, embedder=by_animal, k=2)
    result = search("my dog")
    assert result.passages[0] == ANIMALS[1] and result.indices[0] == 1
    assert len(result.passages) == len(result.indices) == 2
    assert search("my dog", k=1).indices == [1]
    assert search("a cat", k=10).indices[:1] == [0]  # k above the corpus size: every passage
    assert len(search("a cat", k=10).indices) == 3
    assert dspex.retrievers.Embeddings is Embeddings


def test_scores_and_normalisation() -> None:
    search = EmbeddingsWithScores(corpus=ANIMALS, embedder=by_animal, k=3)
    result = search("a dog")
    assert result.indices[0] == 1
    assert result.scores[0] == pytest.approx(1.0, abs=0.01)
    assert result.scores == sorted(result.scores, reverse=True)
    raw = EmbeddingsWithScores(corpus=ANIMALS, embedder=lambda t: by_animal(t) * 5, k=1, normalize=False)
    assert raw("dog dog").scores[0] == pytest.approx(25 * (1 + 0.01), rel=0.01)


async def test_acall_and_threads_agree() -> None:
    search = Embeddings(corpus=ANIMALS, embedder=by_animal, k=1)
    assert (await search.acall("the bird")).indices == [2]
    queries = [("cat", 0), ("dog", 1), ("bird", 2)] * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda q: search(q[0]).indices[0], queries))
    assert found == [expected for _, expected in queries]


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(EmptyCorpusError):
        Embeddings(corpus=[], embedder=by_animal)
    with pytest.raises(ConfigurationError, match="k must be"):
        Embeddings(corpus=ANIMALS, embedder=by_animal, k=0)
    with pytest.raises(ConfigurationError, match="strings"):
        Embeddings(corpus=["a", 3], embedder=by_animal)  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="cache"):
        Embeddings(corpus=ANIMALS, embedder=by_animal, cache=True)
    with pytest.raises(ConfigurationError, match="shape"):
        Embeddings(corpus=ANIMALS, embedder=lambda texts: np.ones(len(texts)))


def test_a_query_of_another_dimension_is_refused() -> None:
    search = Embeddings(corpus=ANIMALS, embedder=by_animal, k=1)
    search.embedder = lambda texts: np.ones((len(texts), 5))
    with pytest.raises(EmbeddingDimensionError, match="5 numbers but the index holds 3-long"):
        search("cat")


def test_save_load_and_from_saved(tmp_path: Path) -> None:
    original = Embeddings(corpus=ANIMALS, embedder=by_animal, k=2, normalize=False)
    original.save(tmp_path / "index")
    assert (tmp_path / "index" / "config.json").exists()
    assert not (tmp_path / "index" / "faiss_index.bin").exists()
    calls = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return by_animal(texts)

    loaded = Embeddings.from_saved(tmp_path / "index", counting)
    assert calls == []  # the corpus is not embedded again
    assert (loaded.corpus, loaded.k, loaded.normalize) == (ANIMALS, 2, False)
    assert loaded("cat").indices == original("cat").indices
    other = Embeddings(corpus=["x"], embedder=by_animal, k=1).load(tmp_path / "index", by_animal)
    assert other.corpus == ANIMALS and other.embedder is by_animal


def test_load_failures(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Embeddings.from_saved(tmp_path / "nowhere", by_animal)
    Embeddings(corpus=ANIMALS, embedder=by_animal).save(tmp_path / "i")
    (tmp_path / "i" / "config.json").write_text('{"k": 1}')
    with pytest.raises(SavedFileError, match="lacks"):
        Embeddings.from_saved(tmp_path / "i", by_animal)
    (tmp_path / "i" / "corpus_embeddings.npy").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        Embeddings.from_saved(tmp_path / "i", by_animal)


def test_copies_share_the_index_and_pickles_keep_it() -> None:
    search = Embeddings(corpus=ANIMALS, embedder=by_animal, k=1)
    assert copy.deepcopy(search) is search
    clone = pickle.loads(pickle.dumps(search))
    assert clone("dog").indices == [1]


def _random_corpus(count: int, dim: int = 32) -> tuple[list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    texts = [f"passage {i}" for i in range(count)]
    return texts, dict(zip(texts, vectors, strict=True))


class Lookup:
    """Vectors from a table (a picklable embedder)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def __call__(self, batch: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in batch])


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu is not installed")
def test_faiss_from_the_threshold_agrees_with_exact_search(tmp_path: Path) -> None:
    texts, table = _random_corpus(3000)
    lookup = Lookup(table)

    exact = Embeddings(corpus=texts, embedder=lookup, k=5, brute_force_threshold=10_000)
    fast = Embeddings(corpus=texts, embedder=lookup, k=5, brute_force_threshold=1000)
    assert exact.index is None and fast.index is not None
    queries = [f"passage {i}" for i in range(0, 3000, 97)]
    agree = sum(exact(q).indices[0] == fast(q).indices[0] for q in queries)
    assert agree == len(queries)  # a passage is its own nearest neighbour either way
    fast.save(tmp_path / "faiss")
    assert (tmp_path / "faiss" / "faiss_index.bin").exists()
    loaded = Embeddings.from_saved(tmp_path / "faiss", lookup)
    assert loaded.index is not None
    assert loaded(queries[3]).indices == fast(queries[3]).indices
    assert pickle.loads(pickle.dumps(fast))(queries[5]).indices == fast(queries[5]).indices


def test_large_corpus_without_faiss_falls_back_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_faiss(name: str, *args: object, **kwargs: object) -> object:
        if name == "faiss":
            raise ImportError("no faiss here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    texts, table = _random_corpus(300)
    search = Embeddings(corpus=texts, embedder=lambda b: np.stack([table[t] for t in b]), k=1, brute_force_threshold=100)
    assert search.index is None
    assert search("passage 42").indices == [42]


def test_index_over_the_simulated_corpus_over_http(sim: SimLMServer, isolated_cache: LMCache) -> None:
    passages = [p.text for p in corpus.passages()]
    embedder = dspex.Embedder("openai/sim-embed", api_base=sim.url, batch_size=100)
    search = Embeddings(corpus=passages, embedder=embedder, k=3)
    assert sim.stats()["by_path"]["/v1/embeddings"] == 6  # 600 passages in batches of 100
    dev = datasets.load("facts", "dev")[:40]
    hits = sum(any(str(r["answer"]).lower() in p.lower() for p in search(r["question"]).passages) for r in dev)
    assert hits >= 36
    # A query embedded with other dimensions than the index: a typed error, not garbage.
    search.embedder = dspex.Embedder("openai/sim-embed", api_base=sim.url, dimensions=64)
    with pytest.raises(EmbeddingDimensionError):
        search(dev[0]["question"])
