"""Request counters of the simulated LM (`GET /stats`)."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

#: how many of the latest media parts `recent_media` remembers
RECENT_MEDIA = 32


class Stats:
    """Counts requests as they start and finish.

    Only touched from the event loop that serves requests (or under the GIL in
    one `SimTransport`), so plain ints and Counters suffice.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter; requests still running stay in `in_flight`."""
        self.total = 0
        self.by_status: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.completions = 0
        self.choices = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        #: requests that offered native tools, and tool calls answered to them
        self.tool_requests = 0
        self.tool_calls = 0
        #: images, audio and files received, by part type (image_url, image, input_audio,
        #: file, document), and the latest few with the sha256 of their bytes
        self.media_requests = 0
        self.media: Counter[str] = Counter()
        self.recent_media: deque[dict[str, Any]] = deque(maxlen=RECENT_MEDIA)
        self.max_in_flight = self.in_flight

    def begin(self, path: str) -> None:
        self.total += 1
        self.by_path[path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, status: int | None) -> None:
        """`status` None: the request was abandoned (client timed out) before an answer."""
        self.in_flight -= 1
        self.by_status[str(status) if status is not None else "abandoned"] += 1

    def completed(self, choices: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.completions += 1
        self.choices += choices
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def received_media(self, parts: Any) -> None:
        """Count the media parts of one served request."""
        if not parts:
            return
        self.media_requests += 1
        for part in parts:
            self.media[part.kind] += 1
            self.recent_media.append(part.as_dict())

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_path": dict(self.by_path),
            "faults": dict(self.faults),
            "completions": self.completions,
            "choices": self.choices,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "tool_requests": self.tool_requests,
            "tool_calls": self.tool_calls,
            "media_requests": self.media_requests,
            "media": dict(self.media),
            "recent_media": list(self.recent_media),
        }
