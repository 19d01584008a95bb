"""Finding the Ray cluster's auth token the way Ray's own clients do.

Token authentication (Ray >= 2.52; on by default for local clusters since 2.59)
rejects drivers and HTTP requests without the cluster's token. Ray looks for it
in this order: the ``RAY_AUTH_TOKEN`` variable, the file named by
``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` (where ``ray get-auth-token
--generate`` writes it). ``dspex.init`` and the CLI both ask `find_token`.

An unreadable or empty ``RAY_AUTH_TOKEN_PATH`` is an error, not a fall-through:
Ray treats it as a misconfiguration too, and silently using another token would
hide the mistake. The token's value is only ever sent to the cluster; its origin
(a variable or path) is what messages show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dspex.errors import ClusterAuthError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"

GET_TOKEN_HINT = (
    "On the head node, `ray get-auth-token` prints the cluster's token (it reads ~/.ray/auth_token "
    "there). Make it available here in one of the ways Ray looks for it: export "
    f"{TOKEN_ENV}=<token>, or export {TOKEN_PATH_ENV}=<file holding the token>, or save it as "
    "~/.ray/auth_token."
)


def default_token_path() -> Path:
    """Where Ray keeps its token when no variable says otherwise."""
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class Token:
    """A token and where it came from (the origin is safe to print; the value is not)."""

    value: str = field(repr=False)
    origin: str = ""


def find_token(env: Mapping[str, str] | None = None) -> Token | None:
    """The Ray auth token in Ray's order, or None when there is none. Raises
    `ClusterAuthError` when ``RAY_AUTH_TOKEN_PATH`` names a missing, unreadable or empty file."""
    env = os.environ if env is None else env
    direct = env.get(TOKEN_ENV, "").strip()
    if direct:
        return Token(direct, f"${TOKEN_ENV}")
    explicit = env.get(TOKEN_PATH_ENV)
    if explicit:
        value = _read(Path(explicit), required=True)
        return Token(value, f"{explicit} (${TOKEN_PATH_ENV})")
    default = default_token_path()
    value = _read(default, required=False)
    return Token(value, str(default)) if value else None


def _read(path: Path, *, required: bool) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if not required:
            return ""
        raise ClusterAuthError(
            f"{TOKEN_PATH_ENV} points to {path}, which does not exist. {GET_TOKEN_HINT}"
        ) from None
    except OSError as exc:
        raise ClusterAuthError(f"cannot read the Ray auth token file {path}: {exc}") from exc
    if required and not value:
        raise ClusterAuthError(
            f"the Ray auth token file {path} ({TOKEN_PATH_ENV}) is empty. {GET_TOKEN_HINT}"
        )
    return value


__all__ = [
    "AUTH_MODE_ENV",
    "GET_TOKEN_HINT",
    "TOKEN_ENV",
    "TOKEN_PATH_ENV",
    "Token",
    "default_token_path",
    "find_token",
]
