"""Fixtures for observability tests: tracing into an in-memory span exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dspex.observability import tracing


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on through a private provider (the process-wide one is left alone)."""
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    assert tracing.instrument(tracer_provider=provider)
    yield memory
    tracing.uninstrument()
    provider.shutdown()
