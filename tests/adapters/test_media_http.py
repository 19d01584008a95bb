"""Images, audio and files over real HTTP: to the simulated LM in OpenAI's and
Anthropic's protocols (it checks and fingerprints what it receives), from a local
image server (Image.from_url and its bad paths), through the cache, the history
and the logs and events (placeholders, never base64)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _media import pdf_bytes, png_bytes, wav_bytes
from aiohttp import web

import dspex
from dspex.clients.budget import CallBudget, budget_scope
from dspex.clients.history import GLOBAL_HISTORY, format_entries
from dspex.errors import LMBadRequestError, MediaFetchError, MediaTypeError, UnsupportedMediaError
from dspex.observability import configure_logging
from dspex.observability.events import emit, subscribe
from dspex.observability.logs import reset_logging
from dspex.simlm import SimLMServer, start_sim_lm

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

PNG = png_bytes(64, 48, (30, 140, 220))
OTHER_PNG = png_bytes(64, 48, (220, 20, 20))


class Caption(dspex.Signature):
    """Describe the image."""

    image: dspex.Image = dspex.InputField()
    answer: str = dspex.OutputField()


class Album(dspex.Signature):
    """Describe the images."""

    images: list[dspex.Image] = dspex.InputField()
    answer: str = dspex.OutputField()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server




@pytest.fixture(autouse=True)
def fresh_stats(sim: SimLMServer) -> None:
    sim.reset_stats()


def openai_lm(sim: SimLMServer, **kwargs: Any) -> dspex.LM:
    return dspex.LM("openai/sim-lm", api_base=sim.url, api_key="k", num_retries=0, **kwargs)


def anthropic_lm(sim: SimLMServer, **kwargs: Any) -> dspex.LM:
    return dspex.LM("anthropic/sim-lm", api_base=sim.url, api_key="k", num_retries=0, **kwargs)


def predictor(signature: Any, lm: dspex.LM) -> dspex.Predict:
    program = dspex.Predict(signature)
    program.lm = lm
    return program


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- to the simulated LM -------------------------------------------------------------------


def test_openai_request_carries_a_real_image_url_part(sim: SimLMServer) -> None:
    result = predictor(Caption, openai_lm(sim))(image=dspex.Image(PNG))
    assert isinstance(result.answer, str)
    stats = sim.stats()
    assert stats["media"] == {"image_url": 1}
    assert stats["recent_media"] == [{"type": "image_url", "media_type": "image/png", "bytes": len(PNG), "sha256": sha(PNG)}]


def test_anthropic_request_carries_a_real_image_block(sim: SimLMServer) -> None:
    predictor(Caption, anthropic_lm(sim))(image=dspex.Image(PNG))
    stats = sim.stats()
    assert stats["media"] == {"image": 1}
    assert stats["recent_media"][0]["sha256"] == sha(PNG)
    assert stats["recent_media"][0]["media_type"] == "image/png"


@pytest.mark.parametrize("make_lm", [openai_lm, anthropic_lm], ids=["openai", "anthropic"])
def test_a_list_of_images_and_image_demos_all_arrive(sim: SimLMServer, make_lm: Any) -> None:
    program = predictor(Album, make_lm(sim))
    program.demos = [{"images": [dspex.Image(OTHER_PNG)], "answer": "red"}]
    program(images=[dspex.Image(PNG), dspex.Image(png_bytes(8, 8))])
    digests = [m["sha256"] for m in sim.stats()["recent_media"]]
    assert digests == [sha(OTHER_PNG), sha(PNG), sha(png_bytes(8, 8))]


def test_a_url_image_is_sent_as_its_url(sim: SimLMServer) -> None:
    predictor(Caption, openai_lm(sim))(image=dspex.Image("https://example.com/dog.jpg"))
    assert sim.stats()["recent_media"] == [
        {"type": "image_url", "media_type": "url", "bytes": 0, "sha256": sha(b"https://example.com/dog.jpg")}
    ]


def test_the_simulated_lm_refuses_a_part_that_is_not_an_image(sim: SimLMServer) -> None:
    # A value forged past dspex's own checks, as a provider would see it: it answers 400.
    forged = dspex.Image.model_construct(url="data:image/png;base64,aGVsbG8gd29ybGQ=")
    with pytest.raises(LMBadRequestError, match="image could not be read"):
        predictor(Caption, openai_lm(sim))(image=forged)


def test_audio_goes_to_openai_and_is_refused_for_anthropic_before_sending(sim: SimLMServer) -> None:
    class Transcribe(dspex.Signature):
        clip: dspex.Audio = dspex.InputField()
        answer: str = dspex.OutputField()

    clip = wav_bytes()
    predictor(Transcribe, openai_lm(sim))(clip=dspex.Audio(clip))
    assert sim.stats()["recent_media"] == [{"type": "input_audio", "media_type": "audio/wav", "bytes": len(clip), "sha256": sha(clip)}]
    sim.reset_stats()
    budget = CallBudget(max_calls=3)
    with budget_scope(budget), pytest.raises(UnsupportedMediaError, match="takes no audio"):
        predictor(Transcribe, anthropic_lm(sim))(clip=dspex.Audio(clip))
    assert sim.stats()["total"] == 0  # refused here, not by the server
    assert budget.calls == 0  # and nothing was charged for it


@pytest.mark.parametrize("make_lm,kind", [(openai_lm, "file"), (anthropic_lm, "document")], ids=["openai", "anthropic"])
def test_a_pdf_file_arrives_as_a_file_part_or_document_block(sim: SimLMServer, make_lm: Any, kind: str) -> None:
    class Summarize(dspex.Signature):
        document: dspex.File = dspex.InputField()
        answer: str = dspex.OutputField()

    pdf = pdf_bytes("quarterly report")
    predictor(Summarize, make_lm(sim))(document=dspex.File.from_bytes(pdf, filename="q3.pdf"))
    assert sim.stats()["recent_media"] == [{"type": kind, "media_type": "application/pdf", "bytes": len(pdf), "sha256": sha(pdf)}]


# --- the cache, the history, logs and events ----------------------------------------------------


def test_the_cache_is_keyed_by_the_image_content(sim: SimLMServer) -> None:
    program = predictor(Caption, openai_lm(sim))
    first = program(image=dspex.Image(PNG))
    again = program(image=dspex.Image(bytes(PNG)))  # same bytes, another object: a hit
    assert sim.stats()["completions"] == 1 and again.answer == first.answer
    program(image=dspex.Image(OTHER_PNG))  # other bytes: a miss
    assert sim.stats()["completions"] == 2


def test_history_keeps_the_request_and_prints_placeholders(sim: SimLMServer) -> None:
    image = dspex.Image(png_bytes(200, 100, (5, 6, 7), noise=True))
    lm = openai_lm(sim)
    program = predictor(Caption, lm)
    program(image=image)
    entry = lm.history[-1]
    assert entry is GLOBAL_HISTORY[-1] and entry in program.history
    # The entry holds what was sent, for replay ...
    sent = [p for m in entry["messages"] if isinstance(m["content"], list) for p in m["content"]]
    assert {"type": "image_url", "image_url": {"url": image.url}} in sent
    # ... and what is printed names the image without its bytes.
    printed = format_entries([entry])
    assert str(image) in printed and image.url[40:120] not in printed
    out = io.StringIO()
    program.inspect_history(n=1, file=out)
    assert str(image) in out.getvalue() and image.url[40:120] not in out.getvalue()


def test_logs_and_events_never_carry_base64(sim: SimLMServer) -> None:
    image = dspex.Image(png_bytes(300, 200, (9, 99, 199), noise=True))
    payload = image.url.partition(",")[2]
    assert len(payload) > 100_000
    stream = io.StringIO()
    configure_logging(level="DEBUG", json=True, stream=stream)
    seen: list[Any] = []
    logger = logging.getLogger("dspex.test_media")
    try:
        with subscribe(seen.append):
            predictor(Caption, openai_lm(sim))(image=image)
            forged = dspex.Image.model_construct(url="data:image/png;base64," + payload[::-1].strip("="))
            with pytest.raises(LMBadRequestError) as failure:
                predictor(Caption, openai_lm(sim))(image=forged)
            # What code commonly logs: the inputs, a message list, the error.
            logger.warning("inputs %r", {"image": image})
            logger.warning("messages %s", json.dumps([{"content": [{"image_url": {"url": image.url}}]}]))
            logger.error("failed: %s", failure.value)
            emit("test.media", "test", request={"url": image.url}, inputs=[{"image": image.url}])
    finally:
        reset_logging()
    logged = stream.getvalue()
    assert "messages" in logged and "inputs" in logged and "test.media" in str(seen)
    assert payload[:64] not in logged and payload[1000:1064] not in logged
    assert "<image/png" in logged
    shown = repr([event.data for event in seen])
    assert payload[:64] not in shown and payload[1000:1064] not in shown


# --- Image.from_url from a local server -----------------------------------------------------------


class ImageServer:
    """A tiny HTTP server on 127.0.0.1 with a PNG, a text file and a 404."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> ImageServer:
        def serve(body: bytes, content_type: str) -> Any:
            async def handler(_: web.Request) -> web.Response:
                return web.Response(body=body, content_type=content_type)

            return handler

        app = web.Application()
        app.router.add_get("/cat.png", serve(PNG, "image/png"))
        # Served with a wrong type: the bytes decide.
        app.router.add_get("/mislabelled", serve(PNG, "application/octet-stream"))
        app.router.add_get("/notes.txt", serve(b"not a picture", "text/plain"))
        app.router.add_get("/clip.wav", serve(wav_bytes(), "audio/wav"))
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(app), self.loop).result(10)
        return self

    async def _serve(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_from_url_downloads_the_image_and_sends_its_bytes(images: ImageServer, sim: SimLMServer) -> None:
    image = dspex.Image.from_url(images.url("/cat.png"))
    assert image.to_bytes() == PNG and image.media_type == "image/png"
    assert dspex.Image.from_url(images.url("/mislabelled")) == image
    predictor(Caption, anthropic_lm(sim))(image=image)
    assert sim.stats()["recent_media"][0]["sha256"] == sha(PNG)
    assert dspex.Audio.from_url(images.url("/clip.wav")).audio_format == "wav"


def test_from_url_bad_paths(images: ImageServer) -> None:
    port = closed_port()
    with pytest.raises(MediaFetchError, match="could not download") as unreachable:
        dspex.Image.from_url(f"http://127.0.0.1:{port}/cat.png", timeout=5)
    assert unreachable.value.status is None
    with pytest.raises(MediaFetchError, match="HTTP 404") as missing:
        dspex.Image.from_url(images.url("/nothing-here.png"))
    assert missing.value.status == 404
    with pytest.raises(MediaTypeError, match=r"could not be identified as an image \(they look like text/plain; it was served as text/plain"):
        dspex.Image.from_url(images.url("/notes.txt"))
    with pytest.raises(MediaFetchError, match="larger than 100 bytes"):
        dspex.Image.from_url(images.url("/cat.png"), max_bytes=100)
    with pytest.raises(MediaFetchError, match="not an http"):
        dspex.Image.from_url("file:///etc/passwd")
    with pytest.raises(MediaTypeError, match="is not audio"):
        dspex.Audio.from_url(images.url("/cat.png"))
