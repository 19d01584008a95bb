"""CPU to put an image into a request: formatting the prompt and keying the cache.

For an image of each size, times (``time.process_time``, best of 5 rounds):

- ``format``: ``ChatAdapter().format`` of a one-image input (parts kept aside in a
  parts session: the data URI is never copied through JSON);
- ``format via JSON``: the same message built outside a session, the way a custom
  adapter calling ``format_value`` + ``with_content_parts`` does (the parts travel
  as JSON inside the text and are parsed back);
- ``cache key``: ``cache_key`` of the formatted messages, the image seen before
  (its digest remembered) and a fresh copy of the same bytes (hashed again);
- ``repr``: the placeholder a log line shows.

    python benchmarks/media.py [--sizes 10000,1000000] [--rounds 5]

Ratios are what to read: session/JSON formatting and the cache key of a seen image
against one hashed afresh.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import dspex
from dspex.adapters import ChatAdapter
from dspex.adapters.types.base import with_content_parts
from dspex.adapters.values import format_value
from dspex.clients.cache import cache_key


class Describe(dspex.Signature):
    """Describe the image."""

    image: dspex.Image = dspex.InputField()
    answer: str = dspex.OutputField()


def jpeg_like(size: int, seed: int) -> bytes:
    """``size`` bytes that start like a JPEG (the rest random, as compressed data is)."""
    rng = random.Random(seed)
    return b"\xff\xd8\xff\xe0" + rng.randbytes(max(0, size - 4))


def per_call_ms(fn: Callable[[], object], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1000


def measure(size: int, rounds: int) -> str:
    adapter = ChatAdapter()
    image = dspex.Image(jpeg_like(size, seed=size))
    calls = max(5, min(2000, 20_000_000 // size))
    messages = adapter.format(Describe, [], {"image": image})

    def via_json() -> object:
        text = f"[[ ## image ## ]]\n{format_value([image])}"
        return with_content_parts({"role": "user", "content": text})

    def key_seen() -> object:
        return cache_key(provider="openai", model="m", messages=messages, params={})

    def key_fresh() -> object:
        fresh = adapter.format(Describe, [], {"image": dspex.Image(image.to_bytes())})
        return cache_key(provider="openai", model="m", messages=fresh, params={})

    fmt = per_call_ms(lambda: adapter.format(Describe, [], {"image": image}), calls, rounds)
    fmt_json = per_call_ms(via_json, calls, rounds)
    seen = per_call_ms(key_seen, calls, rounds)
    fresh = per_call_ms(key_fresh, max(5, calls // 10), rounds)
    shown = per_call_ms(lambda: repr(image), calls, rounds)
    return (
        f"{size:>9} B image: format {fmt:.3f} ms, via JSON {fmt_json:.3f} ms ({fmt_json / fmt:.0f}x); "
        f"cache key seen {seen:.3f} ms, fresh copy {fresh:.3f} ms ({fresh / seen:.0f}x); repr {shown:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        print(measure(size, args.rounds))


if __name__ == "__main__":
    main()
