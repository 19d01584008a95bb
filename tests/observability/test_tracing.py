"""Spans for module calls, LM requests and optimizer trials (OpenTelemetry SDK, in memory)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest
from obs_helpers import SECRET_KEY, FakeTransport, all_attribute_text, by_name, make_lm
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import dspex
from dspex.clients import lm as lm_module
from dspex.errors import LMError
from dspex.observability import (
    lm_span,
    module_span,
    record_trial_result,
    run_context,
    set_lm_result,
    span,
    tracing,
    trial_span,
)

MESSAGES = [{"role": "user", "content": "What is 6 * 7?"}]


# --- nesting and attributes ------------------------------------------------------------


async def test_module_span_contains_the_lm_span_of_a_call_inside_it(
    exporter: InMemorySpanExporter,
) -> None:
    lm = make_lm(FakeTransport())

    class Solve(dspex.Module):
        async def aforward(self, question: str) -> str:
            return (await lm.acall(question))[0]

    program = Solve()
    answer = await program.acall(question="What is 6 * 7?")  # Module.acall opens the span

    assert answer == "42"
    spans = exporter.get_finished_spans()
    module = by_name(spans, "module Solve")
    request = by_name(spans, "chat openai/test-model")
    assert request.parent is not None and request.parent.span_id == module.context.span_id
    assert request.context.trace_id == module.context.trace_id
    assert module.start_time <= request.start_time < request.end_time <= module.end_time
    assert module.attributes["dspex.module.name"] == "Solve"
    assert dict(request.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "openai/test-model",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "dspex.lm.cached": False,
        "dspex.lm.status": 200,
    }


def test_a_failing_sync_module_call_is_an_error_span_through_the_call_hook(
    exporter: InMemorySpanExporter,
) -> None:
    class Fails(dspex.Module):
        def forward(self, question: str) -> str:
            raise ValueError("no answer")

    with pytest.raises(ValueError, match="no answer"):
        Fails()(question="x")  # Module.__call__ reports to the call observers; tracing is one
    module = by_name(exporter.get_finished_spans(), "module Fails")
    assert module.status.status_code == StatusCode.ERROR
    assert module.attributes["error.type"] == "ValueError"


def test_sync_lm_call_inside_a_module_span_is_its_child(exporter: InMemorySpanExporter) -> None:
    lm = make_lm(FakeTransport())
    # The sync LM call runs on dspex's background loop: the span context must travel there.
    with module_span("SyncProgram"):
        assert lm("hi") == ["42"]
    spans = exporter.get_finished_spans()
    module = by_name(spans, "module SyncProgram")
    request = by_name(spans, "chat openai/test-model")
    assert request.parent is not None and request.parent.span_id == module.context.span_id


async def test_concurrent_module_calls_keep_their_own_children(
    exporter: InMemorySpanExporter,
) -> None:
    lm = make_lm(FakeTransport())

    async def call(name: str) -> None:
        with module_span(name):
            await lm.acall(name)

    await asyncio.gather(call("A"), call("B"), call("C"))
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name.startswith("chat ")]
    parents = {s.parent.span_id for s in requests if s.parent is not None}
    modules = {s.context.span_id for s in spans if s.name.startswith("module ")}
    assert len(requests) == 3 and parents == modules


async def test_failed_lm_request_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    lm = make_lm(FakeTransport(status=500))
    with pytest.raises(LMError):
        await lm.acomplete(MESSAGES)
    request = by_name(exporter.get_finished_spans(), "chat openai/test-model")
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes["error.type"]
    assert request.attributes["dspex.lm.status"] == 500
    assert "gen_ai.usage.input_tokens" not in request.attributes


async def test_span_records_a_failure_with_a_redacted_message(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError):
        async with span("work", step=1):
            raise ValueError(f"provider rejected {SECRET_KEY}")
    work = by_name(exporter.get_finished_spans(), "work")
    assert work.status.status_code is StatusCode.ERROR
    assert work.attributes["error.type"] == "ValueError"
    assert [e.name for e in work.events] == ["exception"]
    assert "[REDACTED]" in work.events[0].attributes["exception.message"]
    assert SECRET_KEY not in all_attribute_text([work])


async def test_cancelled_work_is_not_an_error(exporter: InMemorySpanExporter) -> None:
    started = asyncio.Event()

    async def work() -> None:
        async with span("cancelled work"):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = by_name(exporter.get_finished_spans(), "cancelled work")
    assert cancelled.status.status_code is not StatusCode.ERROR
    assert cancelled.attributes["dspex.cancelled"] is True


# --- secrets and content -------------------------------------------------------------------


async def test_no_api_key_in_any_span_attribute(exporter: InMemorySpanExporter) -> None:
    transport = FakeTransport()
    lm = make_lm(transport)
    with module_span("Program"), span("custom", api_key=SECRET_KEY, note=f"key={SECRET_KEY}"):
        await lm.acomplete(MESSAGES)
    with pytest.raises(LMError):
        await make_lm(FakeTransport(status=500)).acomplete(MESSAGES)

    assert (
        transport.headers_seen[0]["Authorization"] == f"Bearer {SECRET_KEY}"
    )  # the key was in play
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    assert "api_key" not in by_name(spans, "custom").attributes
    assert SECRET_KEY not in all_attribute_text(spans)
    assert SECRET_KEY[:12] not in all_attribute_text(spans)


async def test_content_is_recorded_only_when_enabled(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [{"role": "user", "content": f"my key is {SECRET_KEY}; what is 6 * 7?"}]
    with lm_span("openai/test-model", "openai", messages=messages) as request:
        set_lm_result(
            request, usage={"prompt_tokens": 5, "completion_tokens": 1}, status=200, outputs=["42"]
        )
    plain = exporter.get_finished_spans()[-1]
    assert "gen_ai.input.messages" not in plain.attributes
    assert "gen_ai.output.messages" not in plain.attributes
    assert plain.attributes["gen_ai.usage.input_tokens"] == 5

    monkeypatch.setenv("DSPEX_TRACE_CONTENT", "1")
    tracing.refresh()  # the switch is read when tracing is resolved
    with lm_span("openai/test-model", "openai", messages=messages) as request:
        set_lm_result(request, outputs=["42"])
    traced = exporter.get_finished_spans()[-1]
    recorded = json.loads(traced.attributes["gen_ai.input.messages"])
    assert "what is 6 * 7?" in recorded[0]["content"]
    assert json.loads(traced.attributes["gen_ai.output.messages"]) == ["42"]
    assert SECRET_KEY not in all_attribute_text([traced])


# --- trials and runs ----------------------------------------------------------------------------


def test_trial_result_lands_on_the_open_trial_span(exporter: InMemorySpanExporter) -> None:
    with trial_span("run-1", 3, candidate="seed 3"):
        with module_span("Program"):
            pass
        record_trial_result("run-1", 3, score=0.75, kind="candidate")
    spans = exporter.get_finished_spans()
    trial = by_name(spans, "optimizer.trial")
    assert trial.attributes["dspex.run_id"] == "run-1"
    assert trial.attributes["dspex.trial.number"] == 3
    assert trial.attributes["dspex.trial.score"] == 0.75
    assert trial.attributes["dspex.trial.status"] == "scored"
    assert trial.attributes["dspex.trial.kind"] == "candidate"
    assert by_name(spans, "module Program").parent.span_id == trial.context.span_id


def test_trial_result_without_an_open_span_is_a_point_span(exporter: InMemorySpanExporter) -> None:
    with trial_span("run-1", 1):
        record_trial_result("run-1", 2, error=RuntimeError("boom"))  # a different trial
    spans = exporter.get_finished_spans()
    point = next(s for s in spans if s.attributes["dspex.trial.number"] == 2)
    assert point.start_time == point.end_time
    assert point.status.status_code is StatusCode.ERROR
    assert point.attributes["dspex.trial.status"] == "failed"
    opened = next(s for s in spans if s.attributes["dspex.trial.number"] == 1)
    assert "dspex.trial.score" not in opened.attributes


async def test_spans_inside_a_run_carry_its_run_id(exporter: InMemorySpanExporter) -> None:
    lm = make_lm(FakeTransport())
    with run_context("mipro-42"), module_span("Program"):
        await lm.acomplete(MESSAGES)
    with module_span("Outside"):
        pass
    spans = exporter.get_finished_spans()
    assert by_name(spans, "module Program").attributes["dspex.run_id"] == "mipro-42"
    assert by_name(spans, "chat openai/test-model").attributes["dspex.run_id"] == "mipro-42"
    assert "dspex.run_id" not in by_name(spans, "module Outside").attributes


# --- off means off ------------------------------------------------------------------------


def test_helpers_return_one_shared_noop_when_tracing_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_tracer", None)  # resolved and cached as off
    scopes = {
        id(span("x", a=1)),
        id(module_span("Program")),
        id(lm_span("openai/m", "openai")),
        id(trial_span("run", 1)),
    }
    assert scopes == {id(tracing._NOOP_SCOPE)}
    with module_span("Program") as handle:
        assert not handle.is_recording()
        set_lm_result(handle, usage={"prompt_tokens": 1})
    assert record_trial_result("run", 1, score=1.0) is None
    tracing._on_lm_request({"model": "m", "provider": "openai", "latency": 0.1})
    assert tracing.current_trace_ids() is None


def test_uninstrument_removes_the_request_hook(exporter: InMemorySpanExporter) -> None:
    assert lm_module.request_hooks.count(tracing._on_lm_request) == 1
    tracing.instrument(tracer_provider=tracing._explicit_provider)  # twice: still one hook
    assert lm_module.request_hooks.count(tracing._on_lm_request) == 1
    tracing.uninstrument()
    assert tracing._on_lm_request not in lm_module.request_hooks
    with module_span("After"):
        pass
    assert exporter.get_finished_spans() == ()


def test_fresh_process_is_off_until_a_provider_is_configured() -> None:
    """In a clean interpreter: no OpenTelemetry import, then the check-once cache."""
    script = textwrap.dedent(
        """
        import json, sys
        import dspex, dspex.observability as obs
        from dspex.observability import tracing
        out = {}
        with obs.span("a") as s:
            out["off_recording"] = s.is_recording()
        out["otel_imported_by_dspex"] = any(m.startswith("opentelemetry") for m in sys.modules)

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        with obs.span("b") as s:  # imported, no provider yet: decided off, and cached
            out["proxy_recording"] = s.is_recording()
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)
        with obs.span("c") as s:
            out["cached_off_recording"] = s.is_recording()
        obs.refresh()
        with obs.span("d") as s:
            out["after_refresh_recording"] = s.is_recording()
        out["names"] = [x.name for x in memory.get_finished_spans()]
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "off_recording": False,
        "otel_imported_by_dspex": False,
        "proxy_recording": False,
        "cached_off_recording": False,
        "after_refresh_recording": True,
        "names": ["d"],
    }
