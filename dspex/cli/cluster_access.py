"""Reaching a Ray cluster's HTTP API (dashboard, Jobs, State) the way Ray's own CLI does.

Token authentication (Ray >= 2.52; on by default for local clusters since 2.59):
when ``RAY_AUTH_MODE=token`` a cluster rejects HTTP requests without an
``Authorization: Bearer <token>`` header. Ray's clients find the token in this
order: the ``RAY_AUTH_TOKEN`` variable, the file named by ``RAY_AUTH_TOKEN_PATH``,
then ``~/.ray/auth_token`` (where ``ray get-auth-token --generate`` writes it).
`dspex.runtime.auth_token` finds it in the same order; we ask the cluster whether it wants a token at all
(``/api/authentication_mode`` is public) instead of trusting this process's
``RAY_AUTH_MODE``: the CLI often runs on a machine other than the head node.
We never switch authentication off; a missing token is an error that says where
to get one.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dspex.cli.common import ExitCode
from dspex.errors import CliError, ClusterAuthError
from dspex.runtime.auth_token import (
    GET_TOKEN_HINT,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    Token,
    default_token_path,
)
from dspex.runtime.auth_token import find_token as _find_token

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

PROBE_TIMEOUT_S = 5.0

NO_CLUSTER_HINT = (
    "Start a local cluster with `dspex cluster start`, or pass the head node's dashboard URL "
    "with --address (e.g. http://127.0.0.1:8265); check RAY_API_SERVER_ADDRESS / RAY_ADDRESS "
    "if you rely on them."
)


def find_token(env: Mapping[str, str] | None = None) -> Token | None:
    """`dspex.runtime.auth_token.find_token`, its errors as the CLI's (exit code AUTH)."""
    try:
        return _find_token(env)
    except ClusterAuthError as exc:
        raise CliError(str(exc), ExitCode.AUTH) from None


# --- addresses -----------------------------------------------------------------------


def normalize_http_address(address: str) -> str:
    """Turn what a user typed into the dashboard's base URL.

    ``ray://`` (Ray Client) and GCS addresses are different services on other
    ports; resolving them needs a Ray connection, so we ask for the URL instead.
    """
    address = address.strip().rstrip("/")
    if address.startswith(("http://", "https://")):
        return address
    if "://" in address:
        raise CliError(
            f"{address!r} is not a dashboard URL. Pass the head node's dashboard/Jobs URL, "
            "e.g. --address http://127.0.0.1:8265 (`dspex cluster start` prints it).",
            ExitCode.USAGE,
        )
    return f"http://{address}"


def resolve_address(explicit: str | None, local_dashboard: str | None = None) -> str:
    """The dashboard URL to use: --address, then Ray's variables, then our local cluster."""
    candidates = [
        explicit,
        os.environ.get("RAY_API_SERVER_ADDRESS"),
        local_dashboard,
        _http_only(os.environ.get("RAY_ADDRESS")),
    ]
    for candidate in candidates:
        if candidate:
            return normalize_http_address(candidate)
    raise CliError(f"no cluster address given. {NO_CLUSTER_HINT}", ExitCode.USAGE)


def _http_only(value: str | None) -> str | None:
    # RAY_ADDRESS usually holds a GCS address (host:6379) for ray.init; only an
    # http(s) URL there can be the Jobs API.
    if value and value.startswith(("http://", "https://")):
        return value
    return None


# --- talking to the dashboard ----------------------------------------------------------


def http_get_json(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT_S
) -> Any:
    """GET a JSON document, mapping network and auth failures to CliErrors."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    base = _base_of(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, base) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach a Ray cluster at {base} ({reason}). {NO_CLUSTER_HINT}",
            ExitCode.UNREACHABLE,
        ) from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise CliError(
            f"{base} answered, but not like a Ray dashboard. {NO_CLUSTER_HINT}",
            ExitCode.UNREACHABLE,
        ) from exc


def _base_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _http_error(exc: urllib.error.HTTPError, base: str) -> CliError:
    if exc.code == 401:
        return CliError(
            f"the cluster at {base} requires a Ray auth token and none was sent. {GET_TOKEN_HINT}",
            ExitCode.AUTH,
        )
    if exc.code == 403:
        return CliError(
            f"the cluster at {base} rejected the Ray auth token (it is not this cluster's token). {GET_TOKEN_HINT}",
            ExitCode.AUTH,
        )
    return CliError(f"{base} answered HTTP {exc.code} for {exc.url}", ExitCode.FAILED)


def authentication_mode(address: str) -> str:
    """Ask the cluster whether it wants a token ("token") or not ("disabled").

    The endpoint is public by design (the dashboard's login page uses it), so
    this also tells us whether anything is listening at all.
    """
    try:
        reply = http_get_json(f"{address}/api/authentication_mode")
    except CliError as exc:
        # Ray before 2.52 has no such endpoint and no token auth either.
        if exc.code is ExitCode.FAILED and "HTTP 404" in str(exc):
            return "disabled"
        raise
    return str(reply.get("authentication_mode", "disabled"))


def auth_headers(address: str) -> dict[str, str]:
    """The headers a request to `address` needs: a bearer token when the cluster wants one."""
    if authentication_mode(address) != "token":
        return {}
    token = find_token()
    if token is None:
        raise CliError(
            f"the cluster at {address} uses token authentication and no token was found "
            f"(looked at ${TOKEN_ENV}, ${TOKEN_PATH_ENV} and {default_token_path()}). {GET_TOKEN_HINT}",
            ExitCode.AUTH,
        )
    return {"Authorization": f"Bearer {token.value}"}


def list_nodes(address: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every node the cluster knows, alive or dead, from Ray's State API."""
    reply = http_get_json(
        f"{address}/api/v0/nodes?limit=10000&detail=true&timeout=10", headers, timeout=15.0
    )
    try:
        return list(reply["data"]["result"]["result"])
    except (KeyError, TypeError) as exc:
        raise CliError(
            f"unexpected reply from {address}/api/v0/nodes: {str(reply)[:200]}", ExitCode.FAILED
        ) from exc


def _quiet_ray_sdk_logs() -> None:
    # The SDK logs every upload and websocket close at INFO on stderr; the
    # commands print their own progress, so only Ray's warnings get through.
    import logging

    for name in (
        "ray.dashboard.modules.job.sdk",
        "ray.dashboard.modules.dashboard_sdk",
        "ray._private.runtime_env.packaging",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def _api_server_env(address: str) -> Iterator[None]:
    # JobSubmissionClient lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the
    # address it is given; pin the variable to ours while it is built.
    saved = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = saved


def job_client(address: str) -> JobSubmissionClient:
    """A JobSubmissionClient for `address`, authenticated when the cluster needs it."""
    headers = auth_headers(address)
    # A protected endpoint: a wrong token fails here, with our message rather
    # than the SDK's (which talks about this process's RAY_AUTH_MODE).
    http_get_json(f"{address}/api/version", headers)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    _quiet_ray_sdk_logs()

    try:
        with _api_server_env(address):
            return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as exc:
        raise CliError(f"{exc} {GET_TOKEN_HINT}", ExitCode.AUTH) from exc
    except ConnectionError as exc:
        raise CliError(
            f"cannot reach the Ray Jobs API at {address} ({exc}). {NO_CLUSTER_HINT}",
            ExitCode.UNREACHABLE,
        ) from exc
