"""`Embeddings`: top-k passages of a corpus by embedding similarity (DSPy's
``dspy.retrievers.Embeddings``).

    search = dspex.retrievers.Embeddings(corpus=passages, embedder=dspex.Embedder(...), k=3)
    search("Who rules Ulmemoor?")       # Prediction(passages=[...], indices=[...])
    search.save("index/"); dspex.retrievers.Embeddings.from_saved("index/", embedder)

The corpus is embedded once, when the retriever is built. Search is exact, with
numpy (one matrix-vector product and a partial sort), until the corpus reaches
``brute_force_threshold`` passages and FAISS (``pip install faiss-cpu``, the
``dspex[faiss]`` extra) is installed: then an inverted-file FAISS index picks
``k * rerank_factor`` candidates and they are re-ranked exactly. Without FAISS a
large corpus is still searched exactly with numpy. The default threshold, 10,000, is
where the switch was measured to pay (`DEFAULT_BRUTE_FORCE_THRESHOLD`).

Building over a large corpus with the runtime up (``dspex.init()``) fans the
embedding batches out over the EvalWorkers, as `Module.batch` does: each chunk is
embedded once, and the vectors come back in corpus order.

An index is immutable once built, so copies of a program share it (a deep copy
does not duplicate the vectors).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspex.clients.embedding import Embedder, normalise
from dspex.errors import (
    ConfigurationError,
    EmbeddingDimensionError,
    EmptyCorpusError,
    SavedFileError,
)
from dspex.primitives.example import Example
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_BRUTE_FORCE_THRESHOLD = 10_000
"""Passages from which FAISS (when installed) is used. Measured (benchmarks/retrieval.py,
256-dim, one query per call, 2 shared cores): FAISS answers 3x faster than numpy from about
5,000 passages, but below 10,000 its inverted lists are few and recall@5 drops to 0.88-0.95;
from 10,000 it is 4x faster at recall 0.997 (100,000: 42x, 2,900 vs 69 queries/s, recall 1.0,
10 s to build). DSPy switches at 20,000."""
FANOUT_THRESHOLD = 2_000
"""Passages from which building with the runtime up embeds on the EvalWorkers."""
FANOUT_CHUNK = 1_000
_FORMAT = 1


class Embeddings:
    """Top-``k`` passages of ``corpus`` by cosine (``normalize=True``) or dot-product
    similarity of ``embedder``'s vectors. ``embedder``: a `dspex.Embedder`, or any
    function ``texts -> vectors``. Calling it with a query returns a Prediction with
    ``passages`` and their ``indices`` in the corpus, best first."""

    def __init__(
        self,
        corpus: Sequence[str],
        embedder: Any,
        k: int = 5,
        callbacks: list[Any] | None = None,
        cache: bool = False,
        brute_force_threshold: int = DEFAULT_BRUTE_FORCE_THRESHOLD,
        normalize: bool = True,
        *,
        rerank_factor: int = 10,
    ) -> None:
        if cache:
            raise ConfigurationError(
                "Embeddings(cache=True): a retriever does not cache searches; the embedder "
                "caches vectors (dspex.Embedder(..., caching=True))"
            )
        corpus = list(corpus)
        if not corpus:
            raise EmptyCorpusError("Embeddings(corpus=[]): give at least one passage to search")
        bad = next((p for p in corpus if not isinstance(p, str)), None)
        if bad is not None:
            raise ConfigurationError(f"Embeddings(corpus=...) takes strings; got a {type(bad).__name__}: {bad!r:.80}")
        _check_k(k)
        self.corpus = corpus
        self.embedder = embedder
        self.k = k
        self.callbacks = callbacks or []
        self.normalize = normalize
        self.brute_force_threshold = brute_force_threshold
        self.rerank_factor = rerank_factor
        vectors = _corpus_vectors(self._embedder(), corpus)
        self.corpus_embeddings = normalise(vectors) if normalize else vectors
        self.index = self._build_faiss() if len(corpus) >= brute_force_threshold else None

    # --- searching ------------------------------------------------------------------

    def __call__(self, query: str, k: int | None = None) -> Prediction:
        return self.forward(query, k=k)

    def forward(self, query: str, k: int | None = None) -> Prediction:
        passages, indices, scores = self.search([query], k=k)[0]
        return self._prediction(passages, indices, scores)

    async def acall(self, query: str, k: int | None = None) -> Prediction:
        embedder = self._embedder()
        vectors = await embedder.aembed([query])
        passages, indices, scores = self._rank(vectors, k)[0]
        return self._prediction(passages, indices, scores)

    def search(self, queries: Sequence[str], k: int | None = None) -> list[tuple[list[str], list[int], list[float]]]:
        """For each query: (passages, indices, scores), best first."""
        queries = list(queries)
        if not queries:
            return []
        return self._rank(self._embedder().embed(queries), k)

    def _prediction(self, passages: list[str], indices: list[int], scores: list[float]) -> Prediction:
        return Prediction(passages=passages, indices=indices)

    def _rank(self, query_vectors: Any, k: int | None) -> list[tuple[list[str], list[int], list[float]]]:
        import numpy as np

        k = self.k if k is None else k
        _check_k(k)
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        dim = self.corpus_embeddings.shape[1]
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise EmbeddingDimensionError(
                f"the query embeds to {queries.shape[-1]} numbers but the index holds "
                f"{dim}-long vectors: search with the embedder (model and dimensions=) the "
                "index was built with"
            )
        if self.normalize:
            queries = normalise(queries)
        k = min(k, len(self.corpus))
        candidates = self._faiss_candidates(queries, k) if self.index is not None else None
        results = []
        for row, query in enumerate(queries):
            if candidates is None:
                scores = self.corpus_embeddings @ query
                top = _top_k(scores, k)
                top_scores = scores[top]
            else:
                pool = candidates[row][candidates[row] >= 0]
                pool_scores = self.corpus_embeddings[pool] @ query
                order = _top_k(pool_scores, min(k, len(pool)))
                top, top_scores = pool[order], pool_scores[order]
            indices = [int(i) for i in top]
            results.append(([self.corpus[i] for i in indices], indices, [float(s) for s in top_scores]))
        return results

    # --- FAISS ---------------------------------------------------------------------

    def _build_faiss(self) -> Any:
        try:
            import faiss  # type: ignore[import-not-found]
        except ImportError:
            log.info(
                "dspex: %d passages but FAISS is not installed (pip install faiss-cpu): "
                "searching exactly with numpy",
                len(self.corpus),
            )
            return None
        import numpy as np

        vectors = np.ascontiguousarray(self.corpus_embeddings, dtype=np.float32)
        count, dim = vectors.shape
        # About 4 sqrt(n) lists, but FAISS wants at least 39 training points per list.
        lists = max(1, min(int(4 * math.sqrt(count)), count // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        index.nprobe = min(16, lists)
        return index

    def _faiss_candidates(self, queries: Any, k: int) -> Any:
        import numpy as np

        wanted = min(len(self.corpus), k * self.rerank_factor)
        _, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), wanted)
        return ids

    # --- saving ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the corpus, its vectors and settings (and the FAISS index) to a directory."""
        import numpy as np

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": _FORMAT,
            "k": self.k,
            "normalize": self.normalize,
            "brute_force_threshold": self.brute_force_threshold,
            "rerank_factor": self.rerank_factor,
            "corpus": self.corpus,
            "has_faiss_index": self.index is not None,
        }
        (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        np.save(folder / "corpus_embeddings.npy", self.corpus_embeddings)
        if self.index is not None:
            import faiss  # type: ignore[import-not-found]

            faiss.write_index(self.index, str(folder / "faiss_index.bin"))

    def load(self, path: str | os.PathLike[str], embedder: Any) -> Embeddings:
        """Replace this retriever's index with the one saved at ``path``; returns self."""
        import numpy as np

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"no saved Embeddings index at {folder} (save one with .save(path))")
        config_path, vectors_path = folder / "config.json", folder / "corpus_embeddings.npy"
        for needed in (config_path, vectors_path):
            if not needed.exists():
                raise FileNotFoundError(f"{needed} is missing: {folder} is not a complete saved index")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SavedFileError(f"{config_path} is not valid JSON ({exc})") from exc
        missing = [name for name in ("k", "normalize", "corpus") if name not in config]
        if missing:
            raise SavedFileError(f"{config_path} lacks {', '.join(missing)}: not a saved Embeddings index")
        vectors = np.load(vectors_path, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != len(config["corpus"]):
            raise SavedFileError(
                f"{vectors_path} holds an array of shape {vectors.shape} for {len(config['corpus'])} "
                "passages: the files are from different saves"
            )
        self.corpus = list(config["corpus"])
        self.k = config["k"]
        self.normalize = config["normalize"]
        self.brute_force_threshold = config.get("brute_force_threshold", DEFAULT_BRUTE_FORCE_THRESHOLD)
        self.rerank_factor = config.get("rerank_factor", 10)
        self.callbacks = getattr(self, "callbacks", [])
        self.embedder = embedder
        self.corpus_embeddings = vectors.astype(np.float32, copy=False)
        self.index = None
        faiss_path = folder / "faiss_index.bin"
        if config.get("has_faiss_index") and faiss_path.exists():
            try:
                import faiss  # type: ignore[import-not-found]
            except ImportError:
                log.info("dspex: the saved FAISS index is ignored (FAISS is not installed): numpy search")
            else:
                self.index = faiss.read_index(str(faiss_path))
        return self

    @classmethod
    def from_saved(cls, path: str | os.PathLike[str], embedder: Any) -> Embeddings:
        """A retriever loaded from ``path`` without embedding the corpus again."""
        instance = cls.__new__(cls)
        return instance.load(path, embedder)

    # --- plumbing ----------------------------------------------------------------------

    def _embedder(self) -> Embedder:
        embedder = self.embedder
        if isinstance(embedder, Embedder):
            return embedder
        if callable(embedder):
            # Queries are not cached: a long-running service would keep every query seen.
            return Embedder(embedder, caching=False)
        raise ConfigurationError(
            f"Embeddings(embedder=...) must be a dspex.Embedder or a function texts -> vectors, "
            f"got {type(embedder).__name__}"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Embeddings:
        return self  # immutable once built: program copies share the index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("index") is not None:
            import faiss  # type: ignore[import-not-found]

            state["index"] = ("faiss", faiss.serialize_index(state["index"]))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        index = state.get("index")
        if isinstance(index, tuple) and index and index[0] == "faiss":
            import faiss  # type: ignore[import-not-found]

            state["index"] = faiss.deserialize_index(index[1])
        self.__dict__.update(state)

    def __repr__(self) -> str:
        backend = "faiss" if self.index is not None else "numpy"
        return f"{type(self).__name__}({len(self.corpus)} passages, k={self.k}, {backend})"


class EmbeddingsWithScores(Embeddings):
    """`Embeddings` whose predictions also carry each passage's similarity ``scores``."""

    def _prediction(self, passages: list[str], indices: list[int], scores: list[float]) -> Prediction:
        return Prediction(passages=passages, indices=indices, scores=scores)


# --- building ------------------------------------------------------------------------------


class EmbedChunk(Module):
    """One chunk of a corpus -> its vectors: the unit of work an EvalWorker gets."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.embedder = embedder

    async def aforward(self, texts: list[str]) -> Prediction:
        return Prediction(vectors=await self.embedder.aembed(texts))


def _corpus_vectors(embedder: Embedder, corpus: list[str]) -> np.ndarray:
    from dspex.primitives.parallel import batch_runner
    from dspex.utils.aio import run_sync

    if batch_runner() is not None and len(corpus) >= FANOUT_THRESHOLD:
        return run_sync(_fan_out(embedder, corpus))
    return _checked(embedder.embed(corpus), len(corpus))


async def _fan_out(embedder: Embedder, corpus: list[str]) -> np.ndarray:
    """The corpus embedded on the runtime's workers, chunk by chunk, in order."""
    import numpy as np

    from dspex.errors import ParallelExecutionError

    chunks = [corpus[i : i + FANOUT_CHUNK] for i in range(0, len(corpus), FANOUT_CHUNK)]
    examples = [Example(texts=chunk).with_inputs("texts") for chunk in chunks]
    results, failed, errors = await EmbedChunk(embedder).abatch(
        examples, max_errors=1, return_failed_examples=True
    )
    if failed:
        raise ParallelExecutionError(
            f"embedding {len(failed)} of {len(chunks)} corpus chunks failed on the workers: {errors[0]}",
            failed=[i for i, r in enumerate(results) if r is None],
        )
    parts = [_checked(result.vectors, len(chunk)) for result, chunk in zip(results, chunks, strict=True)]
    dims = {part.shape[1] for part in parts}
    if len(dims) > 1:
        raise EmbeddingDimensionError(f"the workers' embeddings have different lengths {sorted(dims)}")
    return np.concatenate(parts, axis=0)


def _checked(vectors: Any, rows: int) -> np.ndarray:
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != rows or matrix.shape[1] == 0:
        raise EmbeddingDimensionError(
            f"the embedder returned an array of shape {matrix.shape} for {rows} passages; "
            f"expected ({rows}, dim)"
        )
    return matrix


def _top_k(scores: Any, k: int) -> Any:
    import numpy as np

    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _check_k(k: Any) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigurationError(f"k must be an int >= 1, got {k!r}")

__all__ = ["DEFAULT_BRUTE_FORCE_THRESHOLD", "EmbedChunk", "Embeddings", "EmbeddingsWithScores"]
