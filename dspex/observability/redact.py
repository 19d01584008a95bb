"""Masking secrets (API keys, bearer tokens) in text bound for logs and traces.

One set of patterns serves both the logging filter and the span attributes, so
"secrets never reach logs or traces" means the same thing in both places. The
patterns err towards masking: a long random-looking value after a word like
``key`` or ``token`` is masked even when it is, say, a cache key, because a
missed secret costs far more than a masked hash.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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
    """``text`` with everything that looks like a credential replaced by ``[REDACTED]``."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KNOWN_SHAPES.sub(REDACTED, text)
    return _LABELLED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``api_key``, ``auth_token``, ...).

    Usage counters such as ``input_tokens`` are not secrets and are not matched.
    """
    return _SECRET_NAME.search(name) is not None


def redact_value(value: Any) -> Any:
    """Strings redacted, sequences redacted item by item, anything else unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [redact_value(item) for item in value]
    return value


__all__ = ["REDACTED", "is_secret_name", "redact", "redact_value"]
