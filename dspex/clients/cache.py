"""The LM response cache: an in-memory LRU in front of an on-disk SQLite store.

Key: sha256 of a canonical JSON of (provider, model, messages, request params,
rollout_id). The API key and API base are never part of it (nor stored), so a
cache directory can be shared and inspected without leaking secrets. Two LMs
that differ only in API base share entries, as in DSPy.

Disk tier: one SQLite file in WAL mode with a busy timeout, so several
processes (Ray workers on one node) can read and write it at once. Reads are
point lookups on the primary key (tens of microseconds) and run inline; writes
go to a per-cache writer thread that commits them in batches, so the event loop
never waits on an fsync or on another process's write lock. A value written
but not yet committed is still visible to ``get`` in this process.

Where it lives: ``configure_cache(disk_dir=...)``, else ``$DSPEX_CACHE_DIR``,
else ``platformdirs.user_cache_dir("dspex")``. How big it may grow:
``configure_cache(disk_size_limit_bytes=...)`` (4 GiB by default; None: no bound);
past it the writer evicts the oldest entries.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from dspex.clients.types import Message
from dspex.observability.blobs import sha256_hex

logger = logging.getLogger(__name__)

CACHE_FILE = "lm_cache.sqlite3"
DEFAULT_MEMORY_MAX_ENTRIES = 100_000
DEFAULT_DISK_SIZE_LIMIT_BYTES = 4 * 1024**3
"""The disk tier's default bound: past it the oldest entries are evicted."""
_EVICT_TO = 0.9  # evict down to this share of the limit, so eviction is not per write
_WRITE_BATCH = 512
_BUSY_TIMEOUT_MS = 10_000

CachedValue = dict[str, Any]
"""A JSON-serialisable record of a response: outputs, finish_reasons, model, usage."""


def cache_key(
    *,
    provider: str,
    model: str,
    messages: Sequence[Message],
    params: dict[str, Any],
    rollout_id: Any = None,
) -> str:
    """The cache key of one request. ``params`` must not contain secrets.

    Content is keyed by what it is: two requests carrying the same image bytes share
    a key whichever objects hold them, a different image gives another key. Long
    strings inside content parts (an image's data URI) enter the key as their sha256,
    remembered for the last few strings, so an image sent again (a demo, a retry) is
    not hashed again."""
    canonical = json.dumps(
        [provider, model, _digested_parts(messages), params, rollout_id],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_json_fallback,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


#: strings at least this long inside content parts are keyed by their digest
_DIGEST_FROM = 32 * 1024


def _digested_parts(messages: Sequence[Message]) -> Any:
    if not any(isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages):
        return messages
    return [
        {**m, "content": _digested(m["content"])} if isinstance(m, dict) and isinstance(m.get("content"), list) else m
        for m in messages
    ]


def _digested(value: Any) -> Any:
    if isinstance(value, str):
        return {"__sha256__": sha256_hex(value)} if len(value) >= _DIGEST_FROM else value
    if isinstance(value, dict):
        return {k: _digested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_digested(v) for v in value]
    return value


def _json_fallback(value: Any) -> Any:
    # Pydantic models (e.g. a response_format class) get a stable JSON form; anything
    # else falls back to its repr, which at worst causes a cache miss, never a wrong hit
    # unless two different objects share a repr.
    schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema):
        return {"__schema__": schema()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return repr(value)


def default_cache_dir() -> Path:
    env = os.environ.get("DSPEX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dspex"))


class LMCache:
    """Two-tier cache of LM responses. Thread-safe; safe across processes on disk."""

    def __init__(
        self,
        *,
        enable_memory: bool = True,
        enable_disk: bool = True,
        disk_dir: str | os.PathLike[str] | None = None,
        memory_max_entries: int = DEFAULT_MEMORY_MAX_ENTRIES,
        disk_size_limit_bytes: int | None = DEFAULT_DISK_SIZE_LIMIT_BYTES,
    ) -> None:
        self.enable_memory = enable_memory
        self.enable_disk = enable_disk
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else default_cache_dir()
        self.disk_size_limit_bytes = disk_size_limit_bytes
        self._memory: LRUCache[str, CachedValue] = LRUCache(maxsize=max(1, memory_max_entries))
        self._mem_lock = threading.Lock()
        self._disk = (
            _DiskStore(self.disk_dir / CACHE_FILE, disk_size_limit_bytes) if enable_disk else None
        )
        _live_caches.add(self)

    @property
    def disk_path(self) -> Path | None:
        return self._disk.path if self._disk is not None else None

    def get(self, key: str) -> CachedValue | None:
        """The cached value for ``key``, or None. A disk hit is promoted to memory."""
        if self.enable_memory:
            with self._mem_lock:
                value = self._memory.get(key)
            if value is not None:
                return value
        if self._disk is None:
            return None
        value = self._disk.get(key)
        if value is not None and self.enable_memory:
            with self._mem_lock:
                self._memory[key] = value
        return value

    def put(self, key: str, value: CachedValue) -> None:
        """Store ``value``: in memory at once, on disk in the background."""
        if self.enable_memory:
            with self._mem_lock:
                self._memory[key] = value
        if self._disk is not None:
            self._disk.put(key, value)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every value put so far is committed to disk."""
        if self._disk is not None:
            self._disk.flush(timeout)

    def clear_memory(self) -> None:
        with self._mem_lock:
            self._memory.clear()

    def reset_memory_cache(self) -> None:
        """DSPy's name for `clear_memory`."""
        self.clear_memory()

    def memory_size(self) -> int:
        with self._mem_lock:
            return len(self._memory)

    def close(self) -> None:
        """Flush pending writes and close the disk store. Later puts stay in memory only."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def __repr__(self) -> str:
        return (
            f"LMCache(memory={self.enable_memory}, disk={self.enable_disk}, "
            f"disk_dir={str(self.disk_dir)!r})"
        )


class _DiskStore:
    """SQLite key-value store: inline reads, batched writes on a writer thread."""

    def __init__(self, path: Path, size_limit: int | None = None) -> None:
        self.path = path
        self.size_limit = size_limit
        self._written_since_check = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn()  # create the schema now, so errors surface at configuration time

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS lm_cache ("
            "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS lm_cache_by_age ON lm_cache (created)")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared by
        # threads running statements at the same time.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def get(self, key: str) -> CachedValue | None:
        text = self._pending.get(key)
        if text is None:
            if self._closed:
                return None
            row = self._conn().execute("SELECT value FROM lm_cache WHERE key=?", (key,)).fetchone()
            if row is None:
                return None
            text = row[0]
        return json.loads(text)

    def put(self, key: str, value: CachedValue) -> None:
        if self._closed:
            return
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._pending[key] = text
        self._ensure_writer()
        self._queue.put((key, text))

    def flush(self, timeout: float | None) -> None:
        if self._writer is None or self._closed:
            return
        self._ensure_writer()  # in a forked child, the parent's writer is gone
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise TimeoutError(
                f"dspex cache: disk writes to {self.path} did not finish in {timeout}s"
            )

    def close(self) -> None:
        if self._closed:
            return
        self.flush(30.0)
        self._closed = True
        if self._writer is not None and self._pid == os.getpid():
            self._queue.put(None)
            self._writer.join(5.0)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _ensure_writer(self) -> None:
        # After a fork the writer thread does not exist in the child: start a new one.
        if self._writer is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._writer is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                self._writer = threading.Thread(
                    target=self._write_loop, name="dspex-cache-writer", daemon=True
                )
                self._writer.start()

    def _write_loop(self) -> None:
        conn = self._connect()
        while True:
            batch, markers, stop = self._next_batch()
            if batch:
                self._commit(conn, batch)
            for marker in markers:
                marker.set()
            if stop:
                return

    def _next_batch(self) -> tuple[list[tuple[str, str]], list[threading.Event], bool]:
        batch: list[tuple[str, str]] = []
        markers: list[threading.Event] = []
        item = self._queue.get()
        while True:
            if item is None:
                return batch, markers, True
            if isinstance(item, threading.Event):
                markers.append(item)
            else:
                batch.append(item)
            if len(batch) >= _WRITE_BATCH:
                return batch, markers, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, markers, False

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[str, str]]) -> None:
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO lm_cache (key, value, created) VALUES (?, ?, ?)",
                [(key, text, now) for key, text in batch],
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            # The cache is an optimisation: losing a batch costs a future LM call, not a
            # wrong answer. Say so loudly rather than crash the writer thread.
            logger.exception("dspex cache: could not write %d entries to %s", len(batch), self.path)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        with self._lock:
            for key, text in batch:
                if self._pending.get(key) is text:
                    del self._pending[key]
        if self.size_limit is not None:
            # Measuring is a few PRAGMAs: do it once per twentieth of the limit written.
            self._written_since_check += sum(len(text) for _, text in batch)
            if self._written_since_check >= max(self.size_limit // 20, 1):
                self._written_since_check = 0
                self.evict_over_limit(conn)

    def used_bytes(self, conn: sqlite3.Connection | None = None) -> int:
        """Bytes the store's live pages take (pages freed by eviction are reused)."""
        conn = conn or self._conn()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def evict_over_limit(self, conn: sqlite3.Connection | None = None) -> int:
        """Delete the oldest entries until the store is under its limit; how many went."""
        if self.size_limit is None:
            return 0
        conn = conn or self._conn()
        evicted = 0
        try:
            while (used := self.used_bytes(conn)) > self.size_limit:
                count = conn.execute("SELECT count(*) FROM lm_cache").fetchone()[0]
                if count == 0:
                    break
                per_entry = used / count
                excess = max(1, int((used - self.size_limit * _EVICT_TO) / per_entry))
                conn.execute(
                    "DELETE FROM lm_cache WHERE key IN "
                    "(SELECT key FROM lm_cache ORDER BY created LIMIT ?)",
                    (excess,),
                )
                evicted += min(excess, count)
        except sqlite3.Error:
            logger.exception("dspex cache: could not evict old entries from %s", self.path)
        return evicted


# --- the process-wide default cache ------------------------------------------

_default: LMCache | None = None
_default_lock = threading.Lock()
_live_caches: weakref.WeakSet[LMCache] = weakref.WeakSet()


def get_cache() -> LMCache:
    """The process-wide cache LMs use, built on first use with default settings."""
    cache = _default
    if cache is not None:
        return cache
    with _default_lock:
        if _default is None:
            _set_default(LMCache())
        assert _default is not None
        return _default


def configure_cache(
    *,
    enable_memory: bool | None = None,
    enable_disk: bool | None = None,
    disk_dir: str | os.PathLike[str] | None = None,
    memory_max_entries: int = DEFAULT_MEMORY_MAX_ENTRIES,
    disk_size_limit_bytes: int | None = DEFAULT_DISK_SIZE_LIMIT_BYTES,
    enable_disk_cache: bool | None = None,
    enable_memory_cache: bool | None = None,
    disk_cache_dir: str | os.PathLike[str] | None = None,
    restrict_pickle: bool = False,
    safe_types: list[type[Any]] | None = None,
) -> LMCache:
    """Replace the process-wide cache (the previous one is flushed and closed).

    DSPy's spellings work too: ``enable_disk_cache``, ``enable_memory_cache`` and
    ``disk_cache_dir`` are ``enable_disk``, ``enable_memory`` and ``disk_dir``.
    ``disk_size_limit_bytes`` bounds the disk tier (oldest entries evicted; None: no
    bound). DSPy's ``restrict_pickle``/``safe_types`` are accepted and change nothing:
    this cache stores JSON and never unpickles what it reads."""
    del restrict_pickle, safe_types
    cache = LMCache(
        enable_memory=_one_of("enable_memory", enable_memory, enable_memory_cache, True),
        enable_disk=_one_of("enable_disk", enable_disk, enable_disk_cache, True),
        disk_dir=_one_of("disk_dir", disk_dir, disk_cache_dir, None),
        memory_max_entries=memory_max_entries,
        disk_size_limit_bytes=disk_size_limit_bytes,
    )
    with _default_lock:
        previous = _default
        _set_default(cache)
    if previous is not None:
        previous.close()
    return cache


def _one_of(name: str, value: Any, dspy_value: Any, default: Any) -> Any:
    if value is not None and dspy_value is not None and value != dspy_value:
        from dspex.errors import ConfigurationError

        raise ConfigurationError(
            f"configure_cache() got {name}={value!r} and its DSPy spelling with {dspy_value!r}; "
            "give one"
        )
    found = value if value is not None else dspy_value
    return default if found is None else found


def _set_default(cache: LMCache) -> None:
    global _default
    _default = cache


def _flush_all_at_exit() -> None:
    for cache in list(_live_caches):
        try:
            cache.flush(5.0)
        except Exception:
            logger.exception("dspex cache: flush at exit failed")


atexit.register(_flush_all_at_exit)
