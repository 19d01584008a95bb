"""A served program's answer, printed token by token as the LM writes it.

    python examples/streaming.py                       # a local Ray started for the run
    python examples/streaming.py --address 127.0.0.1:6380
    python examples/streaming.py --in-process          # dspex.streamify without Ray
    python examples/streaming.py --lm openai/gpt-4o-mini

A ChainOfThought program is served from a supervised replica (``dspex.serve``);
``handle.stream(...)`` runs it there and yields, through a Ray streaming generator,
the chunks of the fields the listeners follow (the adapter's ``[[ ## ... ## ]]``
markers never show), then the final Prediction. Without --lm it uses the simulated
LM on 127.0.0.1, which streams one word every few milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine

import dspex
from dspex.simlm import start_sim_lm
from dspex.streaming import StatusMessage, StreamListener, StreamResponse

QUESTIONS = ("What is the capital of France?", "Why is the sky blue?")


async def show(stream: AsyncIterator[Any]) -> dspex.Prediction:
    """Print each chunk as it arrives; return the final prediction."""
    field = None
    async for item in stream:
        if isinstance(item, StreamResponse):
            if item.signature_field_name != field:
                field = item.signature_field_name
                sys.stdout.write(f"\n  {field}: ")
            sys.stdout.write(item.chunk)
            sys.stdout.flush()
        elif isinstance(item, StatusMessage):
            print(f"\n  [{item.message}]")
        elif isinstance(item, dspex.Prediction):
            print()
            return item
    raise RuntimeError("the stream ended without a prediction")


async def on_the_runtime(program: dspex.Module, listeners: list[StreamListener]) -> None:
    handle = dspex.serve(program, name="streaming-qa", replicas=1)
    try:
        for question in QUESTIONS:
            print(f"Q: {question}")
            prediction = await show(handle.stream(stream_listeners=listeners, question=question))
            print(f"  -> {prediction.answer!r}\n")
    finally:
        handle.stop()


async def in_process(program: dspex.Module, listeners: list[StreamListener]) -> None:
    streamed = dspex.streamify(program, stream_listeners=listeners)
    for question in QUESTIONS:
        print(f"Q: {question}")
        prediction = await show(streamed(question=question))
        print(f"  -> {prediction.answer!r}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: a local one)")
    parser.add_argument("--lm", default=None, help="model name, e.g. openai/gpt-4o-mini (default: the simulated LM)")
    parser.add_argument("--in-process", action="store_true", help="stream in this process, without Ray")
    args = parser.parse_args()

    with start_sim_lm(seed=7) as sim:
        sim.set_stream(chunk_delay_ms=15)  # paced like a real model, so the stream shows
        lm = dspex.LM(args.lm) if args.lm else dspex.LM("openai/sim", api_base=sim.url, api_key="local")
        dspex.configure(lm=lm)
        program = dspex.ChainOfThought("question -> answer")
        listeners = [StreamListener("reasoning"), StreamListener("answer")]
        if args.in_process:
            asyncio.run(in_process(program, listeners))
            return
        dspex.init(address=args.address)
        try:
            asyncio.run(on_the_runtime(program, listeners))
        finally:
            dspex.shutdown()


if __name__ == "__main__":
    main()
