"""What the dashboard reads from the run store, as plain JSON-ready dicts.

The records come from `RunStore`'s own methods. Two things it has no method
for are read here with one read-only SQLite connection: a *fingerprint* (a
handful of aggregates that change whenever a run, trial or usage row is
written, so polling it four times a second costs microseconds) and per-run
totals (trials, LM calls, cost) for the runs table in one query each.

A `StoreView` is not thread-safe: the server calls it from one dedicated
thread, which is also what SQLite's default `check_same_thread` wants.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from dspex.optimizers.run_store import RunRecord, RunStore, TrialRecord

# A snapshot must stay small enough to push on every change.
MAX_RUNS = 200
MAX_TRIALS = 5000
MAX_TEXT = 240

_FINGERPRINT_SQL = """
SELECT (SELECT COUNT(*) FROM runs), (SELECT MAX(updated) FROM runs),
       (SELECT COUNT(*) FROM trials), (SELECT MAX(created) FROM trials),
       (SELECT TOTAL(calls) FROM usage), (SELECT TOTAL(cost) FROM usage)
"""
_TRIAL_TOTALS_SQL = (
    "SELECT run_id, COUNT(*), TOTAL(status = 'failed'), MAX(created) FROM trials GROUP BY run_id"
)
_USAGE_TOTALS_SQL = "SELECT run_id, TOTAL(calls), TOTAL(cost) FROM usage GROUP BY run_id"

Fingerprint = tuple[Any, ...]


class StoreView:
    """Reads runs, trials and usage for the dashboard from one `RunStore`."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._db: sqlite3.Connection | None = None

    @property
    def path(self) -> str:
        return str(self.store.path)

    def _reader(self) -> sqlite3.Connection:
        # Read-only: the dashboard must never be able to change a run, even by a bug.
        if self._db is None:
            uri = self.store.path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=5.0)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def fingerprint(self) -> Fingerprint:
        """Changes whenever any run, trial or usage row is added or updated."""
        return tuple(self._reader().execute(_FINGERPRINT_SQL).fetchone())

    def runs(self) -> list[dict[str, Any]]:
        """The newest runs with their trial and usage totals, newest first."""
        db = self._reader()
        trials = {row[0]: row[1:] for row in db.execute(_TRIAL_TOTALS_SQL)}
        usage = {row[0]: row[1:] for row in db.execute(_USAGE_TOTALS_SQL)}
        return [
            _run_row(record, trials.get(record.run_id), usage.get(record.run_id))
            for record in self.store.list_runs(limit=MAX_RUNS)
        ]

    def run_detail(self, run_id: str) -> dict[str, Any] | None:
        """One run's trials, per-model usage and config, or None if it is not in the store."""
        if not self.store.has_run(run_id):
            return None
        record = self.store.get_run(run_id)
        trials = self.store.trials(run_id)
        return {
            "run_id": record.run_id,
            "optimizer": record.optimizer,
            "status": record.status,
            "best_score": finite(record.best_score),
            "error": _text(record.error),
            "created": record.created,
            "config": _config_rows(record.config),
            "trials": [_trial_row(t) for t in trials[-MAX_TRIALS:]],
            "trials_total": len(trials),
            "planned_trials": _planned_trials(record.config),
            "usage": _usage_rows(self.store.usage(run_id)),
        }


def pick_run(runs: list[dict[str, Any]], wanted: str | None) -> str | None:
    """The run to show: the one asked for if it exists, else the newest running one, else the newest."""
    ids: list[str] = [run["run_id"] for run in runs]
    if wanted and wanted in ids:
        return wanted
    running = [run_id for run_id, run in zip(ids, runs, strict=True) if run["status"] == "running"]
    if running:
        return running[0]
    return ids[0] if ids else None


def finite(value: Any) -> float | None:
    """A float JSON can carry: NaN and infinities become None (JSON has no spelling for them)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _run_row(
    record: RunRecord, trials: tuple[Any, ...] | None, usage: tuple[Any, ...] | None
) -> dict[str, Any]:
    count, failed, last_trial = trials if trials is not None else (0, 0, None)
    calls, cost = usage if usage is not None else (0, 0.0)
    # Recording a trial does not touch runs.updated, so "updated" also looks at the trials.
    updated = max(record.updated, last_trial or 0.0)
    return {
        "run_id": record.run_id,
        "optimizer": record.optimizer,
        "status": record.status,
        "best_score": finite(record.best_score),
        "trials": int(count),
        "failed_trials": int(failed),
        "lm_calls": int(calls),
        "cost": finite(cost),
        "created": record.created,
        "updated": updated,
        "error": _text(record.error),
    }


def _trial_row(trial: TrialRecord) -> dict[str, Any]:
    return {
        "number": trial.number,
        "score": finite(trial.score),
        "status": trial.status,
        "kind": trial.kind,
        "error": _text(trial.error),
        "params": _text(json.dumps(trial.params, default=str, sort_keys=True)),
        "created": trial.created,
    }


def _usage_rows(usage: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = [
        {
            "model": model,
            "calls": int(u["calls"]),
            "prompt_tokens": int(u["prompt_tokens"]),
            "completion_tokens": int(u["completion_tokens"]),
            "cost": finite(u["cost"]),
        }
        for model, u in usage.items()
    ]
    return sorted(rows, key=lambda row: -row["calls"])


def _planned_trials(config: dict[str, Any]) -> int | None:
    # Optimizers that know their trial budget up front store it in their config.
    for key in ("num_trials", "max_trials", "n_trials"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _config_rows(config: dict[str, Any]) -> dict[str, str | None]:
    from dspex.observability.redact import REDACTED, is_secret_name

    # The store holds no keys by contract; masking by name as well costs nothing.
    return {
        str(key): REDACTED if is_secret_name(str(key)) else _text(_plain_text(value))
        for key, value in config.items()
    }


def _plain_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def _text(value: str | None) -> str | None:
    """Shortened and with anything credential-shaped masked: the page is only as safe as its text."""
    if value is None:
        return None
    from dspex.observability.redact import redact

    value = redact(value)
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
