"""Structured logging: run ids from the context, JSON lines, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from obs_helpers import SECRET_KEY
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dspex.observability import (
    RedactingFilter,
    RunContextFilter,
    configure_logging,
    current_run_id,
    module_span,
    reset_logging,
    run_context,
)

HEX_TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """configure_logging into a string buffer; the dspex logger is restored afterwards."""
    buffer = io.StringIO()
    yield buffer
    reset_logging()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_records_inside_a_run_carry_its_id(stream: io.StringIO) -> None:
    configure_logging(level="INFO", json=True, stream=stream)
    with run_context("mipro-3f2a") as run_id:
        assert current_run_id() == run_id
        logging.getLogger("dspex.optimizers").info("trial %d scored %.2f", 3, 0.5)
        logging.getLogger("dspex.evaluate").warning("slow example")
    logging.getLogger("dspex.runtime").info("after the run")
    assert current_run_id() is None

    first, second, third = lines(stream)
    assert first["run_id"] == "mipro-3f2a" and first["message"] == "trial 3 scored 0.50"
    assert first["logger"] == "dspex.optimizers" and first["level"] == "INFO"
    assert second["run_id"] == "mipro-3f2a" and second["logger"] == "dspex.evaluate"
    assert "run_id" not in third
    assert first["ts"].endswith("+00:00")


async def test_concurrent_runs_keep_their_own_ids(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream)
    log = logging.getLogger("dspex.optimizers")
    a_inside, b_logged = asyncio.Event(), asyncio.Event()

    async def run_a() -> None:
        with run_context("run-a"):
            a_inside.set()
            await b_logged.wait()  # run-b logs while run-a is still open
            log.info("from a")

    async def run_b() -> None:
        await a_inside.wait()
        with run_context("run-b"):
            log.info("from b")
            await asyncio.to_thread(log.info, "from b's thread")
        b_logged.set()

    await asyncio.gather(run_a(), run_b())
    seen = {entry["message"]: entry.get("run_id") for entry in lines(stream)}
    assert seen == {"from b": "run-b", "from b's thread": "run-b", "from a": "run-a"}


def test_api_keys_are_masked_in_messages_args_extras_and_tracebacks(stream: io.StringIO) -> None:
    configure_logging(json=True, stream=stream)
    log = logging.getLogger("dspex.clients.lm")
    log.info("calling with key %s", SECRET_KEY)
    log.info("headers %s", {"Authorization": f"Bearer {SECRET_KEY}"})
    log.info("anthropic key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 was set")
    log.info(
        "retrying", extra={"api_key": SECRET_KEY, "detail": f"token={HEX_TOKEN}", "attempt": 2}
    )
    try:
        raise PermissionError(f"401: invalid api_key={SECRET_KEY}")
    except PermissionError:
        log.exception("request failed")

    text = stream.getvalue()
    assert SECRET_KEY not in text and HEX_TOKEN not in text and "sk-ant-api03" not in text
    entries = lines(stream)
    assert entries[0]["message"] == "calling with key [REDACTED]"
    assert "Bearer [REDACTED]" in entries[1]["message"]
    assert "api_key" not in entries[3] and entries[3]["detail"] == "token=[REDACTED]"
    assert entries[3]["attempt"] == 2
    assert "PermissionError" in entries[4]["exc"] and "[REDACTED]" in entries[4]["exc"]


def test_text_format_shows_the_run_and_masks_keys(stream: io.StringIO) -> None:
    configure_logging(level=logging.DEBUG, stream=stream)
    with run_context("copro-1"):
        logging.getLogger("dspex.optimizers").debug("using OPENAI_API_KEY=%s", HEX_TOKEN)
    line = stream.getvalue().strip()
    assert line.endswith("DEBUG dspex.optimizers [run copro-1] using OPENAI_API_KEY=[REDACTED]")


def test_filters_work_on_an_application_handler() -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    handler.addFilter(RunContextFilter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("dspex.evaluate")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with run_context("eval-9"):
            logger.info("key %s", SECRET_KEY)
        logger.info("bad format %d", "not a number")  # must not raise from the filter
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert seen[0].run_id == "eval-9" and seen[0].getMessage() == "key [REDACTED]"
    assert seen[1].run_id is None and "unformattable" in seen[1].getMessage()


def test_configure_twice_keeps_one_handler_and_reset_restores(stream: io.StringIO) -> None:
    logger = logging.getLogger("dspex")
    before = (list(logger.handlers), logger.level, logger.propagate)
    configure_logging(stream=io.StringIO())
    configure_logging(level="warning", json=True, stream=stream)
    logging.getLogger("dspex.runtime").info("hidden")
    logging.getLogger("dspex.runtime").warning("shown")
    assert [entry["message"] for entry in lines(stream)] == ["shown"]
    assert len(logger.handlers) == len(before[0]) + 1 and logger.propagate is False
    reset_logging()
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_json_lines_carry_trace_ids_inside_a_span(
    stream: io.StringIO, exporter: InMemorySpanExporter
) -> None:
    configure_logging(json=True, stream=stream)
    with module_span("Program"):
        logging.getLogger("dspex.modules").info("inside")
    logging.getLogger("dspex.modules").info("outside")
    inside, outside = lines(stream)
    module = exporter.get_finished_spans()[0]
    assert inside["trace_id"] == format(module.context.trace_id, "032x")
    assert inside["span_id"] == format(module.context.span_id, "016x")
    assert "trace_id" not in outside
