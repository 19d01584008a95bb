"""Streaming: time to first chunk and client CPU per chunk, dspex vs the raw stream.

The simulated LM runs in a subprocess (so its CPU is not the client's) and streams
each answer word by word, ``--delay`` ms apart. For the same ChainOfThought prompts,
in one run:

- raw: aiohttp posts the request with ``stream: true`` and reads the SSE lines (no
  decoding beyond finding the text); its first answer-field text is found by
  scanning the accumulated text for the field's marker;
- lm: `dspex.LM` streaming into a sink (the request pipeline: cache key, budget,
  retries, history, usage) with the SSE decoder;
- streamify: ``dspex.streamify(program, stream_listeners=[...])`` end to end, first
  `StreamResponse` of the listened field and the whole stream including the Prediction;
- unstreamed: the same program called normally (the answer arrives all at once).

Reported: median time to first chunk (TTFC) and to the end, client CPU per chunk,
and the ratios against raw.

    python benchmarks/streaming.py [--requests 30] [--delay 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

import dspex
from dspex.clients.streaming import DeltaSink, streaming_to
from dspex.simlm import spawn_sim_lm
from dspex.streaming import StreamListener, StreamResponse

FIELD = "answer"


class Timing:
    def __init__(self) -> None:
        self.first: list[float] = []
        self.total: list[float] = []
        self.cpu: list[float] = []

    def cpu_us(self) -> float:
        return statistics.median(self.cpu) * 1e6


async def measure(runs: Timing, attempt: Callable[[], Awaitable[tuple[float, int]]], deltas: list[int]) -> None:
    cpu0, start = time.process_time(), time.perf_counter()
    first, chunks = await attempt()
    runs.total.append(time.perf_counter() - start)
    runs.cpu.append(time.process_time() - cpu0)
    runs.first.append(first - start)
    if chunks:
        deltas.append(chunks)


async def run(args: argparse.Namespace) -> None:
    with spawn_sim_lm(seed=3) as sim:
        sim.set_stream(chunk_delay_ms=args.delay)
        lm = dspex.LM("openai/sim", api_base=sim.url, cache=False)
        dspex.configure(lm=lm)
        program = dspex.ChainOfThought("question -> answer")
        predictor = program.predict
        adapter = dspex.ChatAdapter()
        streamed = dspex.streamify(program, stream_listeners=[StreamListener(FIELD)])
        timings = {name: Timing() for name in ("raw", "lm", "streamify", "unstreamed")}
        deltas: list[int] = []  # LM deltas per reply (raw count)
        marker = f"[[ ## {FIELD} ## ]]"

        async with aiohttp.ClientSession() as session:
            for index in range(args.requests + 2):  # two warm-up rounds, not counted
                question = f"Question number {index}: what is {index} times {index + 1}?"
                messages = adapter.format(predictor.extended_signature if hasattr(predictor, "extended_signature") else predictor.signature, [], {"question": question})
                body = json.dumps({"model": "sim", "messages": messages, "stream": True}).encode()

                async def raw(body: bytes = body) -> tuple[float, int]:
                    first, chunks, text = 0.0, 0, ""
                    async with session.post(f"{sim.url}/chat/completions", data=body,
                                            headers={"Content-Type": "application/json"}) as response:
                        async for line in response.content:
                            if not line.startswith(b"data: {"):
                                continue
                            delta = json.loads(line[6:])["choices"]
                            piece = delta[0]["delta"].get("content") if delta else None
                            if piece:
                                chunks += 1
                                text += piece
                                if not first and marker in text and text.split(marker, 1)[1].strip():
                                    first = time.perf_counter()
                    return first, chunks

                async def through_lm(messages: list[dict[str, Any]] = messages) -> tuple[float, int]:
                    class Sink(DeltaSink):
                        def __init__(self) -> None:
                            super().__init__()
                            self.first, self.text = 0.0, ""

                        async def receive(self, text: str) -> None:
                            self.text += text
                            if not self.first and marker in self.text and self.text.split(marker, 1)[1].strip():
                                self.first = time.perf_counter()

                    sink = Sink()
                    with streaming_to(sink):
                        await lm.acomplete(messages)
                    return sink.first, sink.delivered

                async def through_streamify(question: str = question) -> tuple[float, int]:
                    first, chunks = 0.0, 0
                    async for item in streamed(question=question + " (s)"):
                        if isinstance(item, StreamResponse):
                            chunks += 1
                            first = first or time.perf_counter()
                    return first, chunks

                async def unstreamed(question: str = question) -> tuple[float, int]:
                    await program.acall(question=question + " (u)")
                    return time.perf_counter(), 0

                for name, attempt in (("raw", raw), ("lm", through_lm), ("streamify", through_streamify),
                                      ("unstreamed", unstreamed)):
                    target = timings[name] if index >= 2 else Timing()
                    await measure(target, attempt, deltas if name == "raw" and index >= 2 else [])

        n = statistics.median(deltas)
        raw, lm_runs, full, plain = (timings[k] for k in ("raw", "lm", "streamify", "unstreamed"))
        ms = lambda values: statistics.median(values) * 1e3  # noqa: E731
        print(f"{args.requests} ChainOfThought replies of ~{n:.0f} chunks (one word every {args.delay:g} ms), medians:")
        print(f"  time to first '{FIELD}' text   raw {ms(raw.first):6.2f} ms   LM stream {ms(lm_runs.first):6.2f} ms"
              f" (x{statistics.median(lm_runs.first) / statistics.median(raw.first):.2f})   streamify "
              f"{ms(full.first):6.2f} ms (x{statistics.median(full.first) / statistics.median(raw.first):.2f})")
        print(f"  time to the end              raw {ms(raw.total):6.2f} ms   LM stream {ms(lm_runs.total):6.2f} ms"
              f" (x{statistics.median(lm_runs.total) / statistics.median(raw.total):.2f})   streamify "
              f"{ms(full.total):6.2f} ms (x{statistics.median(full.total) / statistics.median(raw.total):.2f})")
        print(f"  client CPU per reply         raw {raw.cpu_us():6.0f} us   LM stream {lm_runs.cpu_us():6.0f} us"
              f"   streamify {full.cpu_us():6.0f} us   program unstreamed {plain.cpu_us():6.0f} us")
        raw_chunk = raw.cpu_us() / n
        lm_chunk = lm_runs.cpu_us() / n
        full_chunk = (full.cpu_us() - plain.cpu_us()) / n  # the program's own work taken out
        print(f"  streaming CPU per chunk      raw {raw_chunk:6.1f} us   LM stream {lm_chunk:6.1f} us (x{lm_chunk / raw_chunk:.2f})"
              f"   streamify {full_chunk:6.1f} us (x{full_chunk / raw_chunk:.2f}; its CPU minus the unstreamed program's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--delay", type=float, default=2.0, help="ms between the simulated LM's chunks")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
