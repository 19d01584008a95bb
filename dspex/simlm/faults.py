"""Faults the simulated LM can inject, and the seeded decisions about them.

Every decision is a pure function of (fault seed, request body, attempt number
of that body, completion index), so a run with the same requests sees the same
faults whatever order concurrency delivers them in, and a retry of the same
body gets a fresh draw.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_MAX_TRACKED_BODIES = 100_000


class FaultConfig(BaseModel):
    """Which faults to inject, and how often. All rates are per request in [0, 1].

    Status faults (`error_500_rate`, `error_429_rate`, `timeout_rate`) are drawn
    once per request; content faults (`malformed_rate`, `truncated_rate`) once
    per completion. `fail_first` fails the first k attempts of each distinct
    request body with `fail_status`, then lets it through (for retry tests).
    An outage (`outage=True` until cleared, or `outage_seconds` from the moment
    the config is set) answers every request with 503.
    `context_window_tokens` plays a model's context limit: a prompt estimated
    longer is refused with a 400 ``context_length_exceeded``, as providers do.
    `stream_cut_after` breaks streamed answers off mid-way (`dspex.simlm.streaming`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_500_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_429_rate: float = Field(0.0, ge=0.0, le=1.0)
    retry_after: float | None = Field(1.0, ge=0.0)
    timeout_rate: float = Field(0.0, ge=0.0, le=1.0)
    hang_seconds: float = Field(30.0, ge=0.0)
    malformed_rate: float = Field(0.0, ge=0.0, le=1.0)
    truncated_rate: float = Field(0.0, ge=0.0, le=1.0)
    outage: bool = False
    outage_seconds: float = Field(0.0, ge=0.0)
    fail_first: int = Field(0, ge=0)
    fail_status: int = Field(500, ge=400, le=599)
    context_window_tokens: int | None = Field(None, ge=1)
    #: a streamed answer's connection is closed after this many content chunks
    stream_cut_after: int | None = Field(None, ge=0)
    #: ... on the first k attempts of each body only (0: on every attempt)
    stream_cut_first: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultConfig:
        if self.error_500_rate + self.error_429_rate + self.timeout_rate > 1.0:
            raise ValueError("error_500_rate + error_429_rate + timeout_rate must be at most 1")
        if self.malformed_rate + self.truncated_rate > 1.0:
            raise ValueError("malformed_rate + truncated_rate must be at most 1")
        return self


ContentFault = Literal["malformed", "truncated"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request before answering it."""

    status: int | None = None  # an error status to answer with instead
    retry_after: float | None = None
    hang: float = 0.0  # extra seconds to wait before answering
    attempt: int = 1
    kind: str | None = None  # fault name, for the stats


class FaultInjector:
    """Holds the active `FaultConfig` and decides per request."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seed = seed
        self._clock = clock
        self._attempts: dict[bytes, int] = {}
        self.config = FaultConfig()
        self._set_at = clock()
        self.set(config or FaultConfig())

    def set(self, config: FaultConfig) -> None:
        """Replace the config; restarts the outage clock and the fail_first counts."""
        self.config = config
        self._set_at = self._clock()
        self._attempts.clear()

    def outage_active(self) -> bool:
        cfg = self.config
        if cfg.outage:
            return True
        return cfg.outage_seconds > 0 and self._clock() - self._set_at < cfg.outage_seconds

    def decide(self, key: bytes) -> Decision:
        """The status fault for a request whose body digest is `key`."""
        cfg = self.config
        if self.outage_active():
            return Decision(status=503, retry_after=self._outage_left(), kind="outage")
        attempt = self._count(key)
        if attempt <= cfg.fail_first:
            retry = cfg.retry_after if cfg.fail_status in (429, 503) else None
            return Decision(
                status=cfg.fail_status, retry_after=retry, attempt=attempt, kind="fail_first"
            )
        u = self.draw(key, attempt, "status")
        if u < cfg.error_500_rate:
            return Decision(status=500, attempt=attempt, kind="error_500")
        u -= cfg.error_500_rate
        if u < cfg.error_429_rate:
            return Decision(
                status=429, retry_after=cfg.retry_after, attempt=attempt, kind="error_429"
            )
        u -= cfg.error_429_rate
        if u < cfg.timeout_rate:
            return Decision(hang=cfg.hang_seconds, attempt=attempt, kind="timeout")
        return Decision(attempt=attempt)

    def content_fault(self, key: bytes, attempt: int, index: int) -> ContentFault | None:
        cfg = self.config
        if not (cfg.malformed_rate or cfg.truncated_rate):
            return None
        u = self.draw(key, attempt, f"content{index}")
        if u < cfg.malformed_rate:
            return "malformed"
        if u < cfg.malformed_rate + cfg.truncated_rate:
            return "truncated"
        return None

    def stream_cut(self, attempt: int) -> int | None:
        """After how many content chunks a streamed answer of this attempt is cut (None: not)."""
        cfg = self.config
        if cfg.stream_cut_after is None or (cfg.stream_cut_first and attempt > cfg.stream_cut_first):
            return None
        return cfg.stream_cut_after

    def draw(self, key: bytes, attempt: int, tag: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, body, attempt, tag)."""
        digest = hashlib.blake2b(f"{self._seed}|{attempt}|{tag}|".encode() + key, digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2.0**64

    def _count(self, key: bytes) -> int:
        attempt = self._attempts.get(key, 0) + 1
        if attempt == 1 and len(self._attempts) >= _MAX_TRACKED_BODIES:
            # Forget the oldest body so long runs keep bounded memory.
            self._attempts.pop(next(iter(self._attempts)))
        self._attempts[key] = attempt
        return attempt

    def _outage_left(self) -> float | None:
        cfg = self.config
        if cfg.outage:
            return cfg.retry_after
        return max(0.0, cfg.outage_seconds - (self._clock() - self._set_at))
