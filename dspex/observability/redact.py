"""The one rule for what is a secret, used everywhere a value leaves a process.

``is_secret_name`` decides whether a field holds a secret by its name (``api_key``,
``auth_token``; not ``max_tokens``), ``redact`` masks credentials inside text. On
top of them: ``redact_data`` for structured records that are shown (events,
dashboard, span attributes: the entry stays, its value becomes ``[REDACTED]``)
and ``without_secrets`` for records that are read back (saved programs, the run
store: the entry is left out, so a placeholder is never loaded as a key).
Logs, tracing, events, saving and the run store all call these, so "secrets
never reach logs, events, saved programs or stored runs" means one thing.
``redact`` also shortens base64 content to a placeholder, so what is shown
never carries an image's bytes either, and, with ``redactors`` configured
(`dspex.privacy`), replaces personal data by the placeholders the LM sees. The
patterns err towards masking: a long random-looking value after a word like
``key`` or ``token`` is masked even when it is, say, a cache key, because a
missed secret costs far more than a masked hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.observability.blobs import elide_blobs
from dspex.privacy.session import redact_personal_data, shared_placeholders

REDACTED = "[REDACTED]"

# "Authorization: Bearer <token>" and the like: keep the scheme, drop the credential.
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")

# Keys whose shape gives them away wherever they appear: OpenAI and Anthropic
# (sk-..., sk-proj-..., sk-ant-...), Google (AIza...), GitHub (ghp_...),
# Hugging Face (hf_...), AWS access key ids (AKIA...).
_KNOWN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16})"
)

# A long hex/base64 value right after a secret-ish word: "api_key=...",
# "OPENAI_API_KEY: ...", "token ...", '"authorization": "..."'. The word may
# follow an underscore (OPENAI_API_KEY) but not a letter (monkey, broken).
_LABELLED = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:api[_-]?)?key|token|secret|password|passwd|authorization|auth)"
    r"([\"']?\s*[:=]\s*[\"']?|\s+)"
    r"[A-Za-z0-9+/_\-.~]{16,}={0,2}"
)

# Attribute or field names that hold a secret whatever their value looks like.
_SECRET_NAME = re.compile(
    r"(?i)(api[_-]?key|secret|password|passwd|authorization|credential|bearer"
    r"|(?:auth|access|refresh|id|session)[_-]?token|(?:^|[._\-])token$)"
)


def redact(text: str) -> str:
    """``text`` with everything that looks like a credential replaced by ``[REDACTED]``,
    and base64 content (images, audio, files) shortened to a placeholder
    (`dspex.observability.blobs`): what is shown never carries megabytes of it."""
    text = elide_blobs(text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KNOWN_SHAPES.sub(REDACTED, text)
    text = _LABELLED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    # With redactors configured (dspex.privacy), personal data too: the placeholders
    # the LM saw, inside a program call.
    return redact_personal_data(text)


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``api_key``, ``auth_token``, ...).

    Usage counters such as ``input_tokens`` are not secrets and are not matched.
    """
    return _SECRET_NAME.search(name) is not None


def redact_value(value: Any) -> Any:
    """Strings redacted, sequences redacted item by item, mappings as `redact_data`
    (a list of dicts, such as chat messages, is walked too), anything else unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return redact_data(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [redact_value(item) for item in value]
    return value


def redact_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` to show: secret-named values masked, text redacted, nesting kept."""
    with shared_placeholders():  # one record, one numbering of its personal data
        return {str(key): _shown(str(key), value) for key, value in data.items()}


def _shown(key: str, value: Any) -> Any:
    if is_secret_name(key):
        return REDACTED
    if isinstance(value, Mapping):
        return redact_data(value)
    return redact_value(value)


def without_secrets(value: Any) -> Any:
    """A copy of nested dicts/lists/tuples without the entries under secret names."""
    if isinstance(value, Mapping):
        return {
            key: without_secrets(item)
            for key, item in value.items()
            if not (isinstance(key, str) and is_secret_name(key))
        }
    if isinstance(value, list | tuple):
        return [without_secrets(item) for item in value]
    return value


__all__ = ["REDACTED", "is_secret_name", "redact", "redact_data", "redact_value", "without_secrets"]
