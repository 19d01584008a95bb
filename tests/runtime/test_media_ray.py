"""A program whose demos and inputs hold images, evaluated on Ray workers: the images
travel to the workers (pickled) and from there to the LM over HTTP, byte for byte,
and the results match the in-process run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from _media import png_bytes

import dspex
from dspex.evaluate import Evaluate
from dspex.runtime.evaluation.ray_runner import EvalWorkerPool, shutdown_pool
from dspex.simlm import start_sim_lm

pytestmark = pytest.mark.ray


class ColourQA(dspex.Signature):
    """Answer the question about the image."""

    image: dspex.Image = dspex.InputField()
    question: str = dspex.InputField()
    answer: str = dspex.OutputField()


@pytest.fixture(scope="module")
def pool(ray_cluster: Any) -> Iterator[EvalWorkerPool]:
    pool = EvalWorkerPool()
    yield pool
    pool.shutdown()
    shutdown_pool()


def answered(example: Any, prediction: Any) -> bool:
    return isinstance(prediction.answer, str) and isinstance(example.image, dspex.Image)


def test_image_demos_and_inputs_reach_the_lm_from_ray_workers(pool: EvalWorkerPool) -> None:
    demo_png = png_bytes(16, 16, (250, 250, 0), noise=True)
    program = dspex.Predict(ColourQA)
    program.demos = [{"image": dspex.Image(demo_png), "question": "What is 1 + 1?", "answer": "2"}]
    inputs = [png_bytes(10 + i, 10, (i * 40, 0, 0), noise=True) for i in range(4)]
    devset = [
        dspex.Example(image=dspex.Image(png), question=f"What is {i} + 2?", answer=str(i + 2)).with_inputs("image", "question")
        for i, png in enumerate(inputs)
    ]
    with start_sim_lm(seed=5) as server:
        lm = dspex.LM("openai/sim-lm", api_base=server.url, api_key="x", cache=False)
        with dspex.context(lm=lm):
            local = Evaluate(devset=devset, metric=answered, runner="local", num_threads=2)(program)
            server.reset_stats()
            remote = Evaluate(devset=devset, metric=answered, runner="ray", num_threads=2)(program)
        stats = server.stats()

    assert remote.score == local.score == 100.0
    assert [pred.answer for _, pred, _ in remote.results] == [pred.answer for _, pred, _ in local.results]
    # Every request carried the demo's image and its own input image, intact.
    assert stats["media"] == {"image_url": 2 * len(devset)}
    digests = [m["sha256"] for m in stats["recent_media"]]
    assert digests.count(hashlib.sha256(demo_png).hexdigest()) == len(devset)
    assert {hashlib.sha256(png).hexdigest() for png in inputs} <= set(digests)
    # The examples came back from the workers with their images equal.
    assert [example.image for example, _, _ in remote.results] == [e.image for e in devset]
