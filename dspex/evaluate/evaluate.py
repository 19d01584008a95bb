"""`Evaluate`: score a program on a devset, DSPy-shaped, async inside.

``Evaluate(devset=..., metric=...)(program)`` returns an `EvaluationResult`
whose ``score`` is the average metric as a percentage. The work runs through a
runner from `dspex.evaluate.runners` (in-process by default; the runtime
installs a Ray runner that fans out across nodes); this module owns the
options, the result, and the reports (table, JSON, CSV).
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspex.clients.types import Usage
from dspex.errors import ConfigurationError
from dspex.evaluate import runners
from dspex.evaluate.progress import EventProgress, make_progress, print_table
from dspex.evaluate.runner import (
    EvaluationFailure,
    Row,
    RunOptions,
    example_inputs,
    fields_of,
    nothing_measured,
)
from dspex.observability.hooks import observe_call
from dspex.primitives.settings import settings
from dspex.utils.aio import run_sync

__all__ = ["Evaluate", "EvaluationResult", "result_rows"]

logger = logging.getLogger("dspex.evaluate")


@dataclass
class EvaluationResult:
    """What an evaluation found; ``float(result)`` is the score."""

    score: float
    """Average metric over all examples, as a percentage rounded to 2 places."""
    results: list[Row]
    """``(example, prediction, score)`` per example, in devset order."""
    errors: list[EvaluationFailure] = field(default_factory=list)
    usage: Usage | None = None
    """LM usage summed over the predictions that report it."""
    elapsed: float = 0.0
    """Wall-clock seconds."""
    budget_charged: bool = False
    """``usage`` is already counted in the active run budget (the Ray runner charges
    it as results arrive, so a run's budget stops an evaluation on the workers)."""

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    def __float__(self) -> float:
        return self.score

    def __repr__(self) -> str:
        # The results list can hold 100k rows: keep the repr a summary (DSPy's form).
        return f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} results>)"


class Evaluate:
    """Runs a program over a devset and scores it with a metric.

    Examples run concurrently on asyncio, at most `num_threads` at a time. A
    failing example scores `failure_score` and is listed in the result's
    ``errors``; more than `max_errors` failures stop the run with
    `EvaluationError`. An evaluation that measured nothing (every example
    failed, or the devset is empty) raises `EvaluationError` naming the cause
    rather than returning a score of 0. Per-example scores and outputs are in
    ``result.results``.
    """

    def __init__(
        self,
        *,
        devset: Iterable[Any],
        metric: Any = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        display_table: bool | int = False,
        max_errors: int | None = None,
        failure_score: float = 0.0,
        provide_traceback: bool = False,
        save_as_json: str | Path | None = None,
        save_as_csv: str | Path | None = None,
        runner: str | None = None,
    ) -> None:
        if runner not in _RUNNERS:
            raise ConfigurationError(f"runner must be 'local', 'ray' or None, got {runner!r}")
        self.devset = devset
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.failure_score = failure_score
        self.provide_traceback = provide_traceback
        self.save_as_json = save_as_json
        self.save_as_csv = save_as_csv
        self.runner = runner
        """'local' (in-process), 'ray' (EvalWorker actors; needs the runtime), None: the
        default runner (`dspex.evaluate.runners`): 'ray' while ``dspex.init()`` is in
        effect, else 'local'."""
        self._devset_consumed = False

    def __call__(
        self,
        program: Any,
        metric: Any = None,
        devset: Iterable[Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        save_as_json: str | Path | None = None,
        save_as_csv: str | Path | None = None,
    ) -> EvaluationResult:
        """Evaluate synchronously; works from plain code and inside a running loop.

        With one thread (``num_threads=1``) and the local runner the examples run in
        the calling thread, one after another, as in DSPy: a program or metric that
        needs the main thread (signals, some GUI or notebook libraries) works."""
        evaluation = self.acall(
            program,
            metric=metric,
            devset=devset,
            num_threads=num_threads,
            display_progress=display_progress,
            display_table=display_table,
            save_as_json=save_as_json,
            save_as_csv=save_as_csv,
        )
        if self._runs_in_calling_thread(num_threads):
            return asyncio.run(evaluation)
        return run_sync(evaluation)

    def _runs_in_calling_thread(self, num_threads: int | None) -> bool:
        threads = num_threads if num_threads is not None else self.num_threads
        if threads is None:
            threads = settings.num_threads
        if threads != 1 or runners.get_runner(self.runner).remote:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True  # no loop in this thread: it can run one
        return False

    async def acall(
        self,
        program: Any,
        metric: Any = None,
        devset: Iterable[Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        save_as_json: str | Path | None = None,
        save_as_csv: str | Path | None = None,
    ) -> EvaluationResult:
        """Evaluate `program`; arguments left as None take the constructor's values."""
        inputs = {
            "program": program,
            "metric": metric,
            "devset": devset,
            "num_threads": num_threads,
            "display_progress": display_progress,
            "display_table": display_table,
            "save_as_json": save_as_json,
            "save_as_csv": save_as_csv,
        }
        with observe_call("evaluate", self, inputs) as call:
            result = await self._evaluate(
                program,
                metric,
                devset,
                num_threads,
                display_progress,
                display_table,
                save_as_json,
                save_as_csv,
            )
            call.finish(result)
        return result

    async def _evaluate(
        self,
        program: Any,
        metric: Any,
        devset: Iterable[Any] | None,
        num_threads: int | None,
        display_progress: bool | None,
        display_table: bool | int | None,
        save_as_json: str | Path | None,
        save_as_csv: str | Path | None,
    ) -> EvaluationResult:
        metric = metric if metric is not None else self.metric
        if metric is None:
            raise ConfigurationError(
                "Evaluate has no metric: pass metric= to Evaluate(...) or to the call"
            )
        examples = self._devset(devset)
        options = self._options(num_threads)
        run = runners.get_runner(self.runner).run
        show = self.display_progress if display_progress is None else display_progress
        progress = EventProgress(make_progress(show))
        started = time.perf_counter()
        progress.start(_length(examples))
        try:
            outcome = await run(program, metric, examples, options, progress)
        finally:
            progress.close()
        result = EvaluationResult(
            score=_percent(outcome.results),
            results=outcome.results,
            errors=outcome.failures,
            usage=outcome.usage,
            elapsed=time.perf_counter() - started,
            budget_charged=outcome.budget_charged,
        )
        logger.info(
            "evaluated %d examples: score %.2f%%, %d errors",
            len(result.results),
            result.score,
            result.n_errors,
        )
        table = self.display_table if display_table is None else display_table
        json_path = save_as_json or self.save_as_json
        self._report(result, table, json_path, save_as_csv or self.save_as_csv)
        if result.n_errors >= len(result.results):
            # Every example failed (or there were none): a 0.0 would look like a
            # measured score. The reports above still show what failed.
            raise nothing_measured(result.errors)
        return result

    def _devset(self, devset: Iterable[Any] | None) -> Iterable[Any]:
        if devset is not None:
            return devset
        if iter(self.devset) is self.devset:
            # An iterator evaluates once; a second run would silently see nothing.
            if self._devset_consumed:
                raise ConfigurationError(
                    "the devset given to Evaluate is an iterator an earlier call already "
                    "consumed; pass a list, or a fresh iterator as devset= to the call"
                )
            self._devset_consumed = True
        return self.devset

    def _options(self, num_threads: int | None) -> RunOptions:
        threads = num_threads if num_threads is not None else self.num_threads
        if threads is None:
            threads = settings.num_threads
        # None here defers to settings, where None means no limit.
        max_errors = self.max_errors if self.max_errors is not None else settings.max_errors
        if threads < 1:
            raise ConfigurationError(f"num_threads must be at least 1, got {threads}")
        if max_errors is not None and max_errors < 0:
            raise ConfigurationError(f"max_errors must be 0 or more, got {max_errors}")
        return RunOptions(
            num_threads=int(threads),
            max_errors=max_errors,
            failure_score=self.failure_score,
            provide_traceback=self.provide_traceback,
        )

    def _report(
        self,
        result: EvaluationResult,
        table: bool | int,
        json_path: str | Path | None,
        csv_path: str | Path | None,
    ) -> None:
        if not (table or json_path or csv_path):
            return
        rows = result_rows(result)
        if table:
            # True shows every row; an int shows that many.
            print_table(rows, limit=None if table is True else int(table))
        if json_path:
            save_json(rows, json_path)
        if csv_path:
            save_csv(rows, csv_path)


_RUNNERS = (None, "local", "ray")


def _length(devset: Iterable[Any]) -> int | None:
    try:
        return len(devset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _percent(results: Sequence[Row]) -> float:
    if not results:
        return 0.0
    return round(100 * sum(score for _, _, score in results) / len(results), 2)


def result_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """One flat dict per example: its inputs, ``gold_*`` labels, ``pred_*`` fields, score.

    Failed examples also get an ``error`` (``"Type: message"``).
    """
    failed = {failure.index: failure for failure in result.errors}
    rows = []
    for index, (example, prediction, score) in enumerate(result.results):
        row = _example_columns(example)
        row.update({f"pred_{k}": v for k, v in fields_of(prediction).items()})
        row["score"] = score
        failure = failed.get(index)
        if failure is not None:
            row["error"] = f"{failure.error_type}: {failure.message}"
        rows.append(row)
    return rows


def _example_columns(example: Any) -> dict[str, Any]:
    fields = fields_of(example)
    try:
        inputs = example_inputs(example)
    except Exception:
        # No input keys marked: show every field as given rather than none.
        return fields
    labels = {f"gold_{k}": v for k, v in fields.items() if k not in inputs}
    return {**inputs, **labels}


def save_json(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows as a JSON list: pydantic values (a `dspex.History`, a model output) as
    their JSON dump, other values JSON cannot hold as text."""
    from dspex.primitives.saving import serialize_object

    with Path(path).open("w", encoding="utf-8") as f:
        json.dump(serialize_object(rows), f, indent=2, ensure_ascii=False, default=str)


def save_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows as CSV with the union of their columns; lists and dicts as JSON."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
