"""What a user sees while and after an evaluation runs.

A runner reports each finished example through the tiny `Progress` interface
(`start`, `advance`, `close`), so the in-process runner and the Ray runner share
one renderer. `NullProgress` makes the hot path free when nothing is shown;
rich is imported only when a bar or a table is actually displayed, which keeps
``import dspex`` fast.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from dspex.clients.types import Usage
from dspex.observability.events import emit

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "NullProgress",
    "PlainProgress",
    "Progress",
    "RichProgress",
    "Tally",
    "make_progress",
    "print_table",
]


class Progress(Protocol):
    """Receives one call per finished example; must be cheap per call."""

    def start(self, total: int | None) -> None: ...

    def advance(self, score: float, usage: Usage | None, error: bool) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Shows nothing."""

    def start(self, total: int | None) -> None:
        pass

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Tally:
    """Running totals a progress display summarises."""

    total: int | None = None
    done: int = 0
    errors: int = 0
    score_sum: float = 0.0
    lm_calls: int = 0
    cost: float | None = None

    def add(self, score: float, usage: Usage | None, error: bool) -> None:
        self.done += 1
        self.errors += error
        self.score_sum += score
        if usage is not None:
            self.lm_calls += usage.calls
            if usage.cost is not None:
                self.cost = (self.cost or 0.0) + usage.cost

    def stats(self) -> str:
        """e.g. ``avg 45.95%  errors 2  LM calls 120  $0.0123``."""
        average = 100 * self.score_sum / self.done if self.done else 0.0
        parts = [f"avg {average:.2f}%", f"errors {self.errors}"]
        if self.lm_calls:
            parts.append(f"LM calls {self.lm_calls}")
        if self.cost is not None:
            parts.append(f"${self.cost:.4f}")
        return "  ".join(parts)

    def summary(self) -> str:
        """`stats` preceded by ``done/total``."""
        total = "?" if self.total is None else str(self.total)
        return f"{self.done}/{total}  {self.stats()}"


class PlainProgress:
    """Periodic one-line summaries, for logs and pipes where a live bar would garble."""

    def __init__(self, file: TextIO, *, interval: float = 10.0) -> None:
        self._file = file
        self._interval = interval
        self._tally = Tally()
        self._next_print = 0.0

    def start(self, total: int | None) -> None:
        self._tally = Tally(total=total)
        self._next_print = time.monotonic() + self._interval
        self._write(f"Evaluating {'?' if total is None else total} examples")

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        self._tally.add(score, usage, error)
        now = time.monotonic()
        if now >= self._next_print:
            self._next_print = now + self._interval
            self._write(self._tally.summary())

    def close(self) -> None:
        self._write(f"Evaluated {self._tally.summary()}")

    def _write(self, line: str) -> None:
        print(line, file=self._file, flush=True)


class RichProgress:
    """A live rich bar; redraws at most every `min_interval` seconds, whatever the rate."""

    def __init__(self, console: Console, *, min_interval: float = 0.1) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("Evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            # Redraws happen on our throttle below, not on a background thread.
            auto_refresh=False,
        )
        self._task: Any = None
        self._tally = Tally()
        self._min_interval = min_interval
        self._next_draw = 0.0

    def start(self, total: int | None) -> None:
        self._tally = Tally(total=total)
        self._bar.start()
        self._task = self._bar.add_task("evaluate", total=total, stats="")
        self._draw()

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        self._tally.add(score, usage, error)
        now = time.monotonic()
        if now >= self._next_draw:
            self._next_draw = now + self._min_interval
            self._draw()

    def close(self) -> None:
        if self._task is not None:
            self._draw()
        self._bar.stop()

    def _draw(self) -> None:
        tally = self._tally
        # The bar's own columns show done/total; the text adds the rest.
        self._bar.update(self._task, completed=tally.done, stats=tally.stats())
        self._bar.refresh()


def make_progress(
    enabled: bool, *, file: TextIO | None = None, force_terminal: bool | None = None
) -> Progress:
    """A rich bar on a terminal or notebook, plain lines elsewhere, or nothing."""
    if not enabled:
        return NullProgress()
    stream = file if file is not None else sys.stderr
    console = _console(stream, force_terminal)
    if console.is_terminal or console.is_jupyter:
        return RichProgress(console)
    return PlainProgress(stream)


def print_table(
    rows: Sequence[dict[str, Any]],
    *,
    limit: int | None = None,
    file: TextIO | None = None,
    max_cell: int = 60,
) -> None:
    """Print the first `limit` rows (all when None) as a table, long cells shortened."""
    from rich.table import Table

    shown = list(rows if limit is None else rows[:limit])
    columns = _columns(shown)
    table = Table(show_lines=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in shown:
        table.add_row(*(_cell(row.get(name, ""), max_cell) for name in columns))
    console = _console(file if file is not None else sys.stdout, None)
    if not console.is_terminal:
        # Logs and pipes have no width to respect: keep each row on one line
        # (cells are already shortened) instead of folding at 80 columns.
        console.width = 1000
    console.print(table)
    hidden = len(rows) - len(shown)
    if hidden > 0:
        console.print(f"... {hidden} more rows not displayed ...")


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    # The union of keys in first-seen order: rows may differ (failed rows have
    # no prediction fields but an error).
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any, max_cell: int) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if len(text) > max_cell:
        text = text[: max_cell - 1] + "…"
    return text


def _console(file: TextIO, force_terminal: bool | None) -> Console:
    from rich.console import Console

    return Console(file=file, force_terminal=force_terminal)


class EventProgress:
    """Reports an evaluation on the event bus (``eval.started/progress/finished``) while
    passing every call on to ``inner``; progress events are throttled to one a second.

    The dashboard shows these as evaluation bars; nothing is sent when the bus has
    no subscribers beyond what ``emit`` itself costs.
    """

    def __init__(self, inner: Progress, *, interval: float = 1.0) -> None:
        import uuid

        self._inner = inner
        self._interval = interval
        self._tally = Tally()
        self._next = 0.0
        self.eval_id = f"eval-{uuid.uuid4().hex[:8]}"

    def start(self, total: int | None) -> None:
        self._tally = Tally(total=total)
        self._next = time.monotonic() + self._interval
        self._emit("eval.started")
        self._inner.start(total)

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        self._tally.add(score, usage, error)
        self._inner.advance(score, usage, error)
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self._emit("eval.progress")

    def close(self) -> None:
        self._inner.close()
        self._emit("eval.finished")

    def _emit(self, kind: str) -> None:
        tally = self._tally
        score = 100 * tally.score_sum / tally.done if tally.done else None
        # Events are best-effort: an evaluation never fails because of them.
        with contextlib.suppress(Exception):
            emit(
                kind,
                "evaluate",
                eval_id=self.eval_id,
                done=tally.done,
                total=tally.total,
                errors=tally.errors,
                score=score,
            )
