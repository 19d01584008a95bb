"""dspex.Embedder over real HTTP to the simulated LM's /v1/embeddings, and with functions:
batching, the per-Embedder and shared (disk) caches, request params, retries and typed
errors (unreachable server, auth, wrong dimensions)."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dspex
from dspex.clients.cache import LMCache
from dspex.clients.embedding import Embedder, OpenAIEmbedder, to_embedder
from dspex.errors import (
    ConfigurationError,
    EmbeddingDimensionError,
    LMAuthError,
    LMServerError,
    LMTransportError,
)
from dspex.simlm import SimLMServer, start_sim_lm


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=3)
    try:
        yield server
    finally:
        server.stop()


def _embedding_requests(sim: SimLMServer) -> int:
    return int(sim.stats()["by_path"].get("/v1/embeddings", 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dspex_embedder_is_the_clients_embedder() -> None:
    assert dspex.Embedder is Embedder
    from dspex.optimizers.embedders import Embedder as from_optimizers

    assert from_optimizers is Embedder


def test_hosted_model_embeds_over_http_near_duplicates_near(sim: SimLMServer, isolated_cache: LMCache) -> None:
    embedder = dspex.Embedder("openai/sim-embed", api_base=sim.url)
    texts = [
        "The kingdom of Ulmemoor is ruled by Queen Ada.",
        "The kingdom of Ulmemor is ruled by Queen Ada!",  # a typo and punctuation away
        "Stock prices fell sharply on Tuesday morning.",
    ]
    vectors = embedder(texts)
    assert vectors.shape == (3, 256) and vectors.dtype == np.float32
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > 0.8
    assert abs(unit[0] @ unit[2]) < 0.3
    one = embedder(texts[0])
    assert one.shape == (256,) and np.allclose(one, vectors[0])
    # Deterministic: another server, another process would give the same vectors.
    assert np.allclose(Embedder("sim-embed", api_base=sim.url, caching=False)(texts), vectors)


def test_batches_and_caching(sim: SimLMServer, isolated_cache: LMCache) -> None:
    texts = [f"passage number {i}" for i in range(5)]
    embedder = Embedder("sim-embed", batch_size=2, api_base=sim.url)
    first = embedder(texts)
    assert _embedding_requests(sim) == 3  # 2 + 2 + 1
    assert np.allclose(embedder(texts), first)
    assert _embedding_requests(sim) == 3  # every text embedded before
    embedder([*texts, "a new one"])
    assert _embedding_requests(sim) == 4  # only the new text is sent
    # The shared cache: another Embedder (another process, after a restart) does not pay again,
    # from disk too.
    isolated_cache.flush()
    isolated_cache.clear_memory()
    again = Embedder("sim-embed", batch_size=2, api_base=sim.url)(texts)
    assert np.allclose(again, first)
    assert _embedding_requests(sim) == 4
    # caching=False sends every time, per Embedder or per call.
    Embedder("sim-embed", api_base=sim.url, caching=False)(texts)
    assert _embedding_requests(sim) == 5
    embedder(texts, caching=False)
    assert _embedding_requests(sim) == 8  # in batches of 2


def test_request_params_change_the_vectors_and_the_cache_key(sim: SimLMServer, isolated_cache: LMCache) -> None:
    embedder = Embedder("sim-embed", api_base=sim.url, dimensions=64)
    assert embedder(["hello world"]).shape == (1, 64)
    assert embedder(["hello world"], dimensions=32).shape == (1, 32)
    assert _embedding_requests(sim) == 2


async def test_acall_batches_concurrently(sim: SimLMServer, isolated_cache: LMCache) -> None:
    embedder = Embedder("sim-embed", batch_size=1, api_base=sim.url)
    vectors = await embedder.acall([f"text {i}" for i in range(6)])
    assert vectors.shape == (6, 256)
    assert _embedding_requests(sim) == 6
    assert (await embedder.acall("text 3")).shape == (256,)
    assert _embedding_requests(sim) == 6


def test_retryable_failures_are_retried(sim: SimLMServer, isolated_cache: LMCache) -> None:
    sim.set_faults(fail_first=2, fail_status=500)
    vectors = Embedder("sim-embed", api_base=sim.url)(["retry me"])
    assert vectors.shape == (1, 256)
    assert _embedding_requests(sim) == 3
    sim.set_faults(fail_first=5, fail_status=503, retry_after=0)
    with pytest.raises(LMServerError, match="503"):
        Embedder("sim-embed", api_base=sim.url, num_retries=1)(["never"])


def test_unreachable_server_is_a_transport_error(isolated_cache: LMCache) -> None:
    embedder = Embedder("sim-embed", api_base=f"http://127.0.0.1:{_free_port()}/v1", num_retries=0)
    with pytest.raises(LMTransportError, match="could not reach"):
        embedder(["anyone there?"])


def test_auth_failure_is_typed_and_the_key_stays_secret(isolated_cache: LMCache) -> None:
    server = start_sim_lm(api_key="sk-right")
    try:
        with pytest.raises(LMAuthError, match="401"):
            Embedder("sim-embed", api_base=server.url, api_key="sk-wrong")(["x"])
        good = Embedder("sim-embed", api_base=server.url, api_key="sk-right")
        assert good(["x"]).shape == (1, 256)
        assert "sk-right" not in repr(good)
        assert b"sk-right" not in pickle.dumps(good)
    finally:
        server.stop()


def test_bad_requests_are_not_retried(sim: SimLMServer, isolated_cache: LMCache) -> None:
    with pytest.raises(dspex.LMError, match="dimensions"):
        Embedder("sim-embed", api_base=sim.url, dimensions=3)(["x"])
    assert _embedding_requests(sim) == 1


def test_function_embedders_batch_cache_and_take_kwargs() -> None:
    calls: list[tuple[list[str], dict[str, object]]] = []

    def embed(texts: list[str], **kwargs: object) -> list[list[float]]:
        calls.append((texts, kwargs))
        scale = float(kwargs.get("scale", 1.0))  # type: ignore[arg-type]
        return [[len(t) * scale, 1.0] for t in texts]

    embedder = Embedder(embed, batch_size=2)
    assert embedder(["a", "bb", "ccc"]).tolist() == [[1, 1], [2, 1], [3, 1]]
    assert [len(texts) for texts, _ in calls] == [2, 1]
    embedder(["a", "bb"])
    assert len(calls) == 2  # cached on the Embedder
    assert embedder(["a"], scale=2.0).tolist() == [[2, 1]]  # other kwargs, other vectors
    assert calls[-1][1] == {"scale": 2.0}
    Embedder(embed, caching=False)(["a"])
    Embedder(embed, caching=False)(["a"])
    assert len(calls) == 5


def test_wrong_shapes_and_dimensions_are_typed_errors() -> None:
    with pytest.raises(ConfigurationError, match="shape"):
        Embedder(lambda texts: [[1.0]])(["a", "b"])
    sizes = iter([2, 3])

    def drifting(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), next(sizes)))

    with pytest.raises(EmbeddingDimensionError, match="different lengths"):
        Embedder(drifting, batch_size=1)(["a", "b"])
    with pytest.raises(ConfigurationError):
        Embedder(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="strings"):
        Embedder(lambda texts: [[1.0]] * len(texts))([1, 2])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="batch_size"):
        Embedder(lambda texts: texts, batch_size=0)


def test_to_embedder_and_openai_embedder_pickle_without_key() -> None:
    assert isinstance(to_embedder(lambda texts: texts), Embedder)
    embedder = Embedder("x")
    assert to_embedder(embedder) is embedder
    with pytest.raises(ConfigurationError):
        to_embedder(42)
    raw = OpenAIEmbedder("openai/m", api_base="http://127.0.0.1:1/v1", api_key="sk-hidden")
    assert raw.model == "m"
    assert b"sk-hidden" not in pickle.dumps(raw)


def test_dspy_cache_options_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.clients import cache as cache_module

    monkeypatch.setattr(cache_module, "_default", None)
    cache = dspex.configure_cache(disk_cache_dir=tmp_path / "c", restrict_pickle=True, safe_types=[int])
    try:
        cache.put("k", {"outputs": ["x"]})
        cache.reset_memory_cache()
        assert cache.memory_size() == 0
        assert cache.get("k") == {"outputs": ["x"]}  # still on disk
    finally:
        cache.close()
