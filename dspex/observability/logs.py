"""Structured, secret-free logging for dspex through the standard ``logging`` module.

    from dspex.observability import configure_logging, run_context

    configure_logging(level="INFO", json=True)      # one JSON object per line on stderr
    with run_context("mipro-3f2a"):                  # every dspex record inside carries run_id
        optimizer.compile(program, trainset=train)

dspex logs under ``dspex.*`` (``dspex.optimizers``, ``dspex.evaluate``,
``dspex.runtime``, ``dspex.clients...``). `configure_logging` puts one handler
on the ``dspex`` logger with two filters: `RunContextFilter` stamps the current
run id on each record and `RedactingFilter` masks anything that looks like an
API key in the message, its arguments and any traceback. Applications with
their own handlers can add the same two filters to them.

The run id lives in a ``contextvars.ContextVar``, so it follows asyncio tasks
and ``asyncio.to_thread`` calls started inside the run and never leaks into
concurrent runs.
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from dspex.observability.redact import is_secret_name, redact, redact_value

_run_id: ContextVar[str | None] = ContextVar("dspex_run_id", default=None)
_plain_formatter = logging.Formatter()
_HANDLER_MARK = "_dspex_handler"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "run_id", "run_tag", "taskName"}
)


# --- run context --------------------------------------------------------------


@contextmanager
def run_context(run_id: str) -> Iterator[str]:
    """Tag every log record (and span) made inside the block with ``run_id``."""
    token = _run_id.set(run_id)
    try:
        yield run_id
    finally:
        _run_id.reset(token)


def current_run_id() -> str | None:
    """The run id of the innermost `run_context`, or None outside any run."""
    return _run_id.get()


# --- filters ----------------------------------------------------------------------


class RunContextFilter(logging.Filter):
    """Adds ``record.run_id`` (None outside a run); an explicit ``extra={"run_id": ...}`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = _run_id.get()
        return True


class RedactingFilter(logging.Filter):
    """Masks credentials in the message, its args, the traceback and the stack.

    The message is rendered once here and the args dropped, so no handler or
    formatter further down can render an argument that holds a key.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_render(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _plain_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _render(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # A bad format string must not make the log call raise; show both parts, masked.
        return f"{record.msg} (unformattable args: {record.args!r})"


# --- formatters -----------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """``2025-01-01 12:00:00,000 INFO dspex.optimizers [run mipro-3f2a] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(run_tag)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", None)
        record.run_tag = f" [run {run_id}]" if run_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, run_id, trace ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(_render(record)),
        }
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            entry["run_id"] = run_id
        entry.update(_trace_fields())
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return _json.dumps(entry, default=str, ensure_ascii=False)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """Fields passed with ``extra=``: secret-named ones dropped, string values masked."""
    return {
        key: redact_value(value)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and not is_secret_name(key)
    }


def _trace_fields() -> dict[str, str]:
    # Imported here: tracing is optional and logs must not depend on it at import.
    from dspex.observability.tracing import current_trace_ids

    ids = current_trace_ids()
    return {} if ids is None else {"trace_id": ids[0], "span_id": ids[1]}


# --- setup ----------------------------------------------------------------------------


def configure_logging(
    level: int | str = "INFO",
    *,
    json: bool = False,
    stream: IO[str] | None = None,
    logger: str = "dspex",
    propagate: bool = False,
) -> logging.Handler:
    """Send ``logger``'s records (default: all of dspex) to ``stream`` (default stderr).

    Calling it again replaces the handler it installed before. ``propagate=False``
    (the default) keeps records from also reaching the root logger's handlers,
    which would print each line twice.
    """
    target = logging.getLogger(logger)
    reset_logging(logger)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RunContextFilter())
    handler.addFilter(RedactingFilter())
    # Remember what we change so reset_logging can put it back.
    setattr(handler, _HANDLER_MARK, (target.level, target.propagate))
    target.addHandler(handler)
    target.setLevel(level.upper() if isinstance(level, str) else level)
    target.propagate = propagate
    return handler


def reset_logging(logger: str = "dspex") -> None:
    """Remove the handler `configure_logging` installed; restore the logger's level and propagation."""
    target = logging.getLogger(logger)
    for handler in [h for h in target.handlers if hasattr(h, _HANDLER_MARK)]:
        level, propagate = getattr(handler, _HANDLER_MARK)
        target.setLevel(level)
        target.propagate = propagate
        target.removeHandler(handler)
        handler.close()


__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "RunContextFilter",
    "TextFormatter",
    "configure_logging",
    "current_run_id",
    "reset_logging",
    "run_context",
]
