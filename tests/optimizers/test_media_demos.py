"""Optimizing a program whose examples hold images: the bootstrapped demos keep the
images, the run store holds the compiled program (images as data URIs) and hands it
back loadable, with the demos equal to what was compiled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _media import png_bytes

import dspex
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimTransport


class ColourQA(dspex.Signature):
    """Answer the question about the image."""

    image: dspex.Image = dspex.InputField()
    question: str = dspex.InputField()
    answer: str = dspex.OutputField()


def examples() -> list[dspex.Example]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    return [
        dspex.Example(image=dspex.Image(png_bytes(6, 6, c)), question=f"What is {i} + 1?", answer=str(i + 1)).with_inputs(
            "image", "question"
        )
        for i, c in enumerate(colours)
    ]


def test_bootstrapped_image_demos_survive_the_run_store(lm: Any, sim: SimTransport, store: RunStore, tmp_path: Path) -> None:
    trainset = examples()
    optimizer = dspex.BootstrapFewShot(metric=lambda *_: True, max_bootstrapped_demos=2, max_labeled_demos=2)
    compiled = optimizer.compile(dspex.Predict(ColourQA), trainset=trainset, store=store)
    demos = compiled.demos
    assert demos and all(isinstance(d["image"], dspex.Image) for d in demos)
    assert {d["image"] for d in demos} <= {e.image for e in trainset}

    text = store.get_program(compiled.run_info.run_id)
    assert text is not None and demos[0]["image"].url in text  # the value itself is stored
    saved = tmp_path / "from-store.json"
    saved.write_text(text)
    loaded = dspex.Predict(ColourQA)
    loaded.load(saved)
    assert [d["image"] for d in loaded.demos] == [d["image"] for d in demos]

    sim.core.reset_stats()
    loaded(image=dspex.Image(png_bytes(3, 3)), question="What is 7 + 1?")
    assert sim.core.stats.snapshot()["media"] == {"image_url": len(demos) + 1}
