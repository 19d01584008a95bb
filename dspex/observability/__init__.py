"""Observability for dspex: OpenTelemetry spans and structured, secret-free logs.

Importing this package is cheap: OpenTelemetry is imported only once tracing
is on (see `dspex.observability.tracing`), and logging setup happens only when
`configure_logging` is called.
"""

from dspex.observability.logs import (
    JsonFormatter,
    RedactingFilter,
    RunContextFilter,
    TextFormatter,
    configure_logging,
    current_run_id,
    reset_logging,
    run_context,
)
from dspex.observability.redact import is_secret_name, redact
from dspex.observability.tracing import (
    current_trace_ids,
    instrument,
    is_enabled,
    lm_span,
    module_span,
    record_trial_result,
    refresh,
    set_lm_result,
    span,
    trial_span,
    uninstrument,
)

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "RunContextFilter",
    "TextFormatter",
    "configure_logging",
    "current_run_id",
    "current_trace_ids",
    "instrument",
    "is_enabled",
    "is_secret_name",
    "lm_span",
    "module_span",
    "record_trial_result",
    "redact",
    "refresh",
    "reset_logging",
    "run_context",
    "set_lm_result",
    "span",
    "trial_span",
    "uninstrument",
]
