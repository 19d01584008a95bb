"""The run store: optimization runs, their steps (checkpoints), trials and LM usage.

SQLite in WAL mode, so a coordinator writing and a CLI reading at the same time
both work. A run's *steps* are its checkpoints: each finished unit of work
(a bootstrap, a proposal, a trial's score) is stored under a stable key, and a
resumed run replays them instead of recomputing. A run that ends with a program
(finished, or stopped by its budget) stores that program's saved state, the JSON
``program.save("x.json")`` writes, so ``dspex runs show RUN_ID --save x.json``
can hand it out wherever the run ran. Nothing stored here may hold an API key:
configs are reduced to plain values and program states are scrubbed of
secret-named entries before they are written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from dspex.errors import ConfigurationError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    optimizer TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    best_score REAL,
    budget_limited INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS trials (
    run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    params TEXT NOT NULL,
    score REAL,
    status TEXT NOT NULL,
    error TEXT,
    kind TEXT NOT NULL DEFAULT 'trial',
    created REAL NOT NULL,
    PRIMARY KEY (run_id, number)
);
CREATE TABLE IF NOT EXISTS programs (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (run_id, model)
);
CREATE TABLE IF NOT EXISTS coordinator_slots (
    slot TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    assigned REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS coordinator_slots_by_run ON coordinator_slots (run_id);
"""

RUN_STATUSES = ("running", "finished", "budget_limited", "failed", "cancelled")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    optimizer: str
    status: str
    config: dict[str, Any]
    created: float
    updated: float
    best_score: float | None
    budget_limited: bool
    error: str | None


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    number: int
    params: dict[str, Any]
    score: float | None
    status: str
    error: str | None
    kind: str
    created: float


def default_store_path() -> Path:
    explicit = os.environ.get("DSPEX_RUNS_DB")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_data_dir("dspex")) / "runs.sqlite3"


class RunStore:
    """A SQLite file of runs. Safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._local = threading.local()

    # --- runs --------------------------------------------------------------------

    def create_run(self, run_id: str, optimizer: str, config: dict[str, Any]) -> RunRecord:
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, optimizer, status, config, created, updated) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, optimizer, json.dumps(config, default=str), now, now),
            )
            db.execute("UPDATE runs SET status='running', updated=? WHERE run_id=?", (now, run_id))
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise ConfigurationError(
                f"no run {run_id!r} in {self.path}; `dspex runs list` shows the runs there"
            )
        return _run_record(row)

    def has_run(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

    def runs_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Run ids that start with ``prefix`` (at most ``limit``), in id order."""
        with self._connect() as db:
            # substr, not LIKE: '_' and '%' in a prefix are literal characters.
            rows = db.execute(
                "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT ?",
                (len(prefix), prefix, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def list_runs(self, limit: int = 100) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_run_record(r) for r in rows]

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        best_score: float | None = None,
        budget_limited: bool | None = None,
        error: str | None = None,
    ) -> None:
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {RUN_STATUSES}")
        sets, values = ["updated=?"], [time.time()]
        for column, value in (
            ("status", status),
            ("best_score", best_score),
            ("budget_limited", None if budget_limited is None else int(budget_limited)),
            ("error", error),
        ):
            if value is not None:
                sets.append(f"{column}=?")
                values.append(value)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", (*values, run_id))

    # --- steps (checkpoints) ------------------------------------------------------------

    def get_step(self, run_id: str, key: str) -> tuple[bool, Any]:
        with self._connect() as db:
            row = db.execute("SELECT value FROM steps WHERE run_id=? AND key=?", (run_id, key)).fetchone()
        if row is None:
            return False, None
        return True, cloudpickle.loads(row[0])

    def put_step(self, run_id: str, key: str, value: Any) -> None:
        blob = cloudpickle.dumps(value)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO steps (run_id, key, value, created) VALUES (?, ?, ?, ?)",
                (run_id, key, blob, time.time()),
            )
            db.execute("UPDATE runs SET updated=? WHERE run_id=?", (time.time(), run_id))

    def step_keys(self, run_id: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT key FROM steps WHERE run_id=? ORDER BY created", (run_id,)).fetchall()
        return [r[0] for r in rows]

    # --- the run's program ---------------------------------------------------------

    def put_program(self, run_id: str, state_json: str) -> None:
        """Store the run's program as the JSON document ``program.save`` writes."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO programs (run_id, state, created) VALUES (?, ?, ?)",
                (run_id, state_json, time.time()),
            )

    def get_program(self, run_id: str) -> str | None:
        """The run's stored program (JSON text), or None when it has none."""
        with self._connect() as db:
            row = db.execute("SELECT state FROM programs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    # --- trials and usage -------------------------------------------------------------

    def record_trial(
        self,
        run_id: str,
        number: int,
        params: dict[str, Any],
        *,
        score: float | None,
        status: str,
        error: str | None = None,
        kind: str = "trial",
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO trials (run_id, number, params, score, status, error, kind, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, number, json.dumps(params, default=str), score, status, error, kind, time.time()),
            )

    def trials(self, run_id: str) -> list[TrialRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT run_id, number, params, score, status, error, kind, created FROM trials "
                "WHERE run_id=? ORDER BY number",
                (run_id,),
            ).fetchall()
        return [TrialRecord(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def add_usage(
        self, run_id: str, model: str, *, calls: int, prompt_tokens: int, completion_tokens: int, cost: float
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, model) DO UPDATE SET "
                "calls=calls+excluded.calls, prompt_tokens=prompt_tokens+excluded.prompt_tokens, "
                "completion_tokens=completion_tokens+excluded.completion_tokens, cost=cost+excluded.cost",
                (run_id, model, calls, prompt_tokens, completion_tokens, cost),
            )

    def usage(self, run_id: str) -> dict[str, dict[str, float]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT model, calls, prompt_tokens, completion_tokens, cost FROM usage WHERE run_id=?", (run_id,)
            ).fetchall()
        return {
            r[0]: {"calls": r[1], "prompt_tokens": r[2], "completion_tokens": r[3], "cost": r[4]} for r in rows
        }

    # --- reusable coordinators ----------------------------------------------------------
    # A coordinator that serves one run after another (the runtime's warm coordinators) is
    # known by its slot id, not by a run id: this says which run a slot serves right now,
    # so a restarted slot resumes that run and a driver finds the coordinator of a run.

    def assign_slot(self, slot: str, run_id: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO coordinator_slots (slot, run_id, assigned) VALUES (?, ?, ?)",
                (slot, run_id, time.time()),
            )

    def release_slot(self, slot: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM coordinator_slots WHERE slot=?", (slot,))

    def slot_run(self, slot: str) -> str | None:
        """The run the slot serves, or None when it is free."""
        with self._connect() as db:
            row = db.execute("SELECT run_id FROM coordinator_slots WHERE slot=?", (slot,)).fetchone()
        return None if row is None else str(row[0])

    def run_slot(self, run_id: str) -> str | None:
        """The slot serving the run, or None when no reusable coordinator does."""
        with self._connect() as db:
            row = db.execute(
                "SELECT slot FROM coordinator_slots WHERE run_id=? ORDER BY assigned DESC", (run_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def delete_run(self, run_id: str) -> None:
        with self._connect() as db:
            for table in ("runs", "steps", "trials", "usage", "programs", "coordinator_slots"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        optimizer=row[1],
        status=row[2],
        config=json.loads(row[3]),
        created=row[4],
        updated=row[5],
        best_score=row[6],
        budget_limited=bool(row[7]),
        error=row[8],
    )
