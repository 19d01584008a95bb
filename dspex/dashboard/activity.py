"""What the dashboard derives from the runtime's event stream.

Events arrive in batches (whatever was logged since the last read). Most of
them are kept as a short "recent activity" list; evaluation events are folded
into one progress record per evaluation; per-request LM events are only
counted, since a busy run logs hundreds a second. Fall-throughs to an LM's
fallback (``lm.fallback``) are shown, but a run of them between the same two
models is one line with a ``count``: while a provider is down every request
falls through, and one line per request would push everything else out.

Evaluation events are expected as ``eval.started`` / ``eval.progress`` /
``eval.finished`` with ``done``, ``total`` and optionally ``errors`` and
``score`` in their data, one evaluation per event source (or ``eval_id``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

RECENT_EVENTS = 60
EVALUATIONS_SHOWN = 6
# Seen in the counts, not in the recent list: too many to read one by one.
QUIET_KINDS = ("lm.request", "eval.progress")
# Events that mean the run store just changed, so it is worth reading at once.
STORE_KINDS = ("trial.", "run.")
FALLBACK_KIND = "lm.fallback"  # dspex.clients.fallback


class Activity:
    """Recent events, evaluation progress and LM request counts."""

    def __init__(self, keep: int = RECENT_EVENTS) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._evaluations: dict[str, dict[str, Any]] = {}
        self.lm_requests = 0

    def add(self, events: list[dict[str, Any]]) -> bool:
        """Take in new events; returns whether any of them says the run store changed."""
        store_changed = False
        for event in events:
            kind = event["kind"]
            store_changed = store_changed or kind.startswith(STORE_KINDS)
            if kind == "lm.request":
                self.lm_requests += 1
            if kind.startswith("eval."):
                self._track_evaluation(event)
            if kind == FALLBACK_KIND and self._fold_fallback(event):
                continue
            if kind not in QUIET_KINDS:
                self._recent.append(event)
        return store_changed

    def snapshot(self) -> dict[str, Any]:
        evaluations = sorted(self._evaluations.values(), key=lambda e: e["updated"], reverse=True)
        return {
            "events": list(reversed(self._recent)),
            "evaluations": evaluations[:EVALUATIONS_SHOWN],
            "lm_requests": self.lm_requests,
        }

    def _fold_fallback(self, event: dict[str, Any]) -> bool:
        """Count ``event`` into the newest line if that is the same fall-through."""
        if not self._recent:
            return False
        newest = self._recent[-1]
        if newest["kind"] != FALLBACK_KIND or _hop(newest) != _hop(event):
            return False
        count = int(newest["data"].get("count", 1)) + 1
        self._recent[-1] = {**event, "data": {**event["data"], "count": count}}
        return True

    def _track_evaluation(self, event: dict[str, Any]) -> None:
        data = event["data"]
        key = str(data.get("eval_id") or event["source"])
        record = self._evaluations.setdefault(
            key,
            {"source": key, "done": 0, "total": None, "errors": 0, "score": None, "finished": False},
        )
        for name in ("done", "total", "errors", "score"):
            if data.get(name) is not None:
                record[name] = data[name]
        if event["kind"] == "eval.finished":
            record["finished"] = True
            if record["total"] is not None:
                record["done"] = record["total"]
        record["updated"] = event["time"]
        # Many evaluations run in one optimization; only the latest few are worth a bar.
        if len(self._evaluations) > 4 * EVALUATIONS_SHOWN:
            oldest = min(self._evaluations, key=lambda k: self._evaluations[k]["updated"])
            del self._evaluations[oldest]


def _hop(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (event.get("source"), data.get("from_model"), data.get("to_model"))
