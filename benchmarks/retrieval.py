"""Retrieval queries per second with dspex.retrievers.Embeddings: exact numpy search vs FAISS.

For each corpus size: a corpus of unit vectors drawn around 1,000 topic centres (so
neighbourhoods exist, as with real text), and queries that are noisy copies of corpus
passages. Each query goes through ``retriever(query)`` end to end (query embedding by a
table lookup, so the search itself is what is timed), one at a time, as a program calls it.
Reported per size and backend: queries per second, the time to build the index (FAISS
trains an inverted file; numpy builds nothing), and FAISS's recall@k against exact search.
The size where FAISS's queries per second overtake numpy's is where
``brute_force_threshold`` should sit on this machine.

BLAS and OpenMP run one thread per process here (set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS
to change it): a single query's search is a matrix-vector product, which extra threads slow
down on a small shared machine (measured 0.24 ms vs 1.3 ms for 10k x 256 on 2 busy cores),
and FAISS's OpenMP threads spin after a search, starving numpy's. Each figure is the best of
``--rounds`` rounds, since other processes share the cores.

    python benchmarks/retrieval.py [--sizes 10000 100000] [--dim 256] [--queries 300] [--k 5]
"""

from __future__ import annotations

import argparse
import os
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy (and FAISS) load their thread pools

import numpy as np  # noqa: E402

from dspex.retrievers import Embeddings  # noqa: E402


class Table:
    """An embedder that looks vectors up (picklable, no model cost)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.rows = {text: row for text, row in zip(texts, vectors, strict=True)}

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.rows[t] for t in texts])


def corpus(size: int, dim: int, queries: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, size)] + 0.6 * rng.normal(size=(size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, size, queries)
    asked = vectors[picks] + 0.3 * rng.normal(size=(queries, dim)).astype(np.float32) / np.sqrt(dim) * 4
    texts = [f"p{i}" for i in range(size)]
    query_texts = [f"q{i}" for i in range(queries)]
    return texts, vectors, query_texts, asked.astype(np.float32)


def measure(retriever: Embeddings, queries: list[str], rounds: int) -> tuple[float, list[list[int]]]:
    retriever(queries[0])  # warm-up
    best = 0.0
    for _ in range(rounds):
        found = []
        start = time.perf_counter()
        for query in queries:
            found.append(retriever(query).indices)
        best = max(best, len(queries) / (time.perf_counter() - start))
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import faiss  # noqa: F401

        have_faiss = True
    except ImportError:
        have_faiss = False
        print("FAISS is not installed (pip install faiss-cpu): numpy only")

    threads = os.environ["OMP_NUM_THREADS"]
    print(f"dim={args.dim} k={args.k} queries={args.queries}, one query per call, {threads} BLAS/OpenMP thread(s)")
    print(f"{'passages':>9} {'backend':>7} {'build s':>8} {'queries/s':>10} {'recall@k':>9}")
    for size in args.sizes:
        texts, vectors, query_texts, asked = corpus(size, args.dim, args.queries)
        table = Table(texts + query_texts, np.concatenate([vectors, asked]))
        start = time.perf_counter()
        exact = Embeddings(corpus=texts, embedder=table, k=args.k, brute_force_threshold=size + 1)
        built = time.perf_counter() - start
        exact_qps, truth = measure(exact, query_texts, args.rounds)
        print(f"{size:>9} {'numpy':>7} {built:>8.2f} {exact_qps:>10.0f} {'1.000':>9}")
        if not have_faiss:
            continue
        start = time.perf_counter()
        fast = Embeddings(corpus=texts, embedder=table, k=args.k, brute_force_threshold=1)
        built = time.perf_counter() - start
        fast_qps, found = measure(fast, query_texts, args.rounds)
        recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth, found, strict=True)])
        print(f"{size:>9} {'faiss':>7} {built:>8.2f} {fast_qps:>10.0f} {recall:>9.3f}   ({fast_qps / exact_qps:.1f}x numpy)")


if __name__ == "__main__":
    main()
