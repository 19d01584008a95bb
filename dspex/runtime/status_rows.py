"""The live runtime's actors read as plain, JSON-ready rows: the supervision tree, the
provider pools and dead letters.

`dspex.status()` (``dspex status``) and the dashboard show the same things, so
both read them through these functions: one reading of each actor, one shape.
Values that come from user code or the network (dead letter inputs, errors)
are masked with the one secret rule and shortened for display.
"""

from __future__ import annotations

import math
from typing import Any

from dspex.observability.redact import redact
from dspex.runtime.names import NAMESPACE, POOL_PREFIX

MAX_DEPTH = 8  # supervision tree levels shown; deeper means a cycle or a bug
MAX_TEXT = 240


# --- provider pools ---------------------------------------------------------------


def provider_pools(timeout: float) -> list[dict[str, Any]]:
    """The stats of every provider pool actor in the cluster (needs a Ray connection)."""
    import ray
    from ray.util import list_named_actors

    names = sorted(
        entry["name"]
        for entry in list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE and entry["name"].startswith(POOL_PREFIX)
    )
    rows = []
    for name in names:
        try:
            stats = ray.get(ray.get_actor(name, namespace=NAMESPACE).stats.remote(), timeout=timeout)
        except Exception as exc:  # a pool dying between the listing and the call
            rows.append(
                {"name": name, "model": _model_of(name), "breaker": "unreachable", "error": short_text(exc)}
            )
            continue
        rows.append(pool_row(name, stats))
    return rows


def pool_row(name: str, stats: dict[str, Any]) -> dict[str, Any]:
    """One pool's stats, reduced to what a reader is shown."""
    return {
        "name": name,
        "model": str(stats.get("model") or _model_of(name)),
        "breaker": state_name(stats.get("breaker")),
        "in_flight": as_int(stats.get("in_flight")),
        "queued": as_int(stats.get("queued")),
        "calls": as_int(stats.get("calls")),
        "errors": as_int(stats.get("errors")),
        "retries": as_int(stats.get("retries")),
        "requests_per_s": as_number(stats.get("requests_per_s")),
        "rate_limit_paused_for": as_number(stats.get("rate_limit_paused_for")),
        "prompt_tokens": as_int(stats.get("prompt_tokens")),
        "completion_tokens": as_int(stats.get("completion_tokens")),
        "cost": as_number(stats.get("cost")),
    }


def _model_of(pool_name: str) -> str:
    # dspex.pool.<provider>.<model>.<digest>: the model is what a reader recognises.
    parts = pool_name.split(".")
    return ".".join(parts[3:-1]) or pool_name


# --- supervision tree and dead letters ------------------------------------------------


def tree_node(item: Any, depth: int = 0) -> dict[str, Any]:
    """A tree node from a `TreeNode` (or a dict of the same fields), children nested."""
    children = field_of(item, "children", default=None) or []
    strategy = field_of(item, "strategy", default=None)
    return {
        "name": str(field_of(item, "name", "id", default="?")),
        "kind": str(field_of(item, "kind", "type", default="worker")),
        "strategy": None if strategy is None else str(strategy),
        "status": state_name(field_of(item, "state", "status", default="unknown")),
        "restarts": as_int(field_of(item, "restarts", "restart_count", default=0)),
        "labels": {str(k): short_text(v) for k, v in dict(field_of(item, "labels", default=None) or ()).items()},
        "children": [] if depth >= MAX_DEPTH else [tree_node(c, depth + 1) for c in children],
    }


def dead_letter_row(entry: Any) -> dict[str, Any]:
    """One `DeadLetter` (or a dict with ``reason`` instead of error type and message)."""
    error_type = str(field_of(entry, "error_type", default="")).rsplit(".", 1)[-1]
    message = field_of(entry, "error_message", "reason", "error", default="")
    return {
        "id": str(field_of(entry, "id", default="")),
        "time": as_number(field_of(entry, "last_failed_at", "time", default=None)),
        "source": short_text(field_of(entry, "source", default="")),
        "reason": short_text(f"{error_type}: {message}" if error_type else message),
        "attempts": as_int(field_of(entry, "attempts", default=0)),
        "input": short_text(field_of(entry, "input", default="")),
    }


# --- shaping values -------------------------------------------------------------------


def field_of(item: Any, *names: str, default: Any) -> Any:
    """The first of ``names`` that ``item`` has, as a key (a dict) or an attribute."""
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if not isinstance(item, dict) and hasattr(item, name):
            return getattr(item, name)
    return default


def state_name(value: Any) -> str:
    # Enums print as "BreakerState.OPEN"; a reader wants "open".
    value = getattr(value, "value", value)
    return str(value).lower().replace("-", "_") if value is not None else "unknown"


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def short_text(value: Any) -> str:
    """Text for display: secrets masked, at most `MAX_TEXT` characters."""
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}"
    else:
        text = value if isinstance(value, str) else str(value)
    text = redact(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT",
    "as_int",
    "as_number",
    "dead_letter_row",
    "field_of",
    "pool_row",
    "provider_pools",
    "short_text",
    "state_name",
    "tree_node",
]
