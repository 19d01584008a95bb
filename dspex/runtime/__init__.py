"""Starting, attaching to and stopping the dspex runtime on a Ray cluster.

``dspex.init()`` starts a local Ray (or connects to ``address=`` /
``RAY_ADDRESS``) and starts or attaches to the application tree
(`dspex.runtime.supervision.application`): the root supervisor is a detached named
actor in the ``dspex`` namespace, so a second driver attaching to the same
cluster finds the same tree. While the runtime is up, evaluations fan out to
EvalWorker actors, compiles run in coordinator actors (both installed into the
core's seams by `dspex.runtime.seams`) and LM requests go through the
cluster's provider pools.

``dspex.status()`` reads the tree, the pools and the dead letters of a running
runtime (the ``dspex status`` command prints it).

Ray is imported only inside these functions: ``import dspex`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import (
    ClusterAuthError,
    ClusterUnreachableError,
    ConfigurationError,
    RuntimeNotRunningError,
)
from dspex.runtime.names import NAMESPACE, ROOT_SUPERVISOR

# Workers of a job started by dspex.init send no usage statistics anywhere, like the
# driver; they route LM calls through the pools by the setup hook (DSPEX_POOLS=0: not).
WORKER_ENV: dict[str, str] = {"RAY_USAGE_STATS_ENABLED": "0"}
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's driver
PROBE_TIMEOUT_S = 3.0  # Ray itself retries an unreachable address for minutes
DEFAULT_GCS_PORT = 6379

log = logging.getLogger("dspex.runtime")


@dataclass
class Runtime:
    """What ``dspex.init`` set up in this process."""

    address: str | None
    started_ray: bool
    root: Any = None
    owns_root: bool = False  # this process created the tree (so shutdown() stops it)
    options: dict[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
_runtime: Runtime | None = None


def active() -> bool:
    """Whether this process has the runtime up (``dspex.init`` was called)."""
    return _runtime is not None


def current() -> Runtime | None:
    return _runtime


# --- init / shutdown -----------------------------------------------------------------


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
    **ray_kwargs: Any,
) -> Runtime:
    """Start (or attach to) Ray and the dspex supervision tree. Idempotent.

    - Ray already initialised in this process: attach to it (nothing else is
      started, and ``shutdown()`` leaves that Ray running).
    - ``address`` (or ``RAY_ADDRESS``): connect to that cluster. When a Ray auth
      token is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
      ``~/.ray/auth_token``) the driver sends it.
    - Neither: start a fresh local Ray with ``num_cpus`` CPUs.

    ``runtime_env`` is merged with dspex's own (``RAY_USAGE_STATS_ENABLED=0``, and a
    worker setup hook that routes workers' LM requests through the provider pools,
    composed with yours; ``env_vars={"DSPEX_POOLS": "0"}`` keeps them in-process; your
    values win). Raises ``ClusterUnreachableError``
    (a ``ConfigurationError``) when the address does not answer.
    """
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address or os.environ.get("RAY_ADDRESS"):
            _use_token_if_required(address or os.environ.get("RAY_ADDRESS"))
        import ray

        started = False
        if ray.is_initialized():
            _note_ignored(address, num_cpus, runtime_env, ray_kwargs)
        else:
            address = address or os.environ.get("RAY_ADDRESS") or None
            kwargs = {**ray_kwargs, "runtime_env": _merged_runtime_env(runtime_env)}
            _start_ray(address, num_cpus, kwargs)
            started = address is None
        runtime = Runtime(address=address, started_ray=started, options=dict(ray_kwargs))
        try:
            runtime.root, runtime.owns_root = _start_root()
        except BaseException:
            if started:
                ray.shutdown()
            raise
        _runtime = runtime
        _install_seams()
        _enable_pools()
        log.info("dspex runtime up (address=%s)", address or "local")
        return runtime


def shutdown(*, stop_tree: bool | None = None) -> None:
    """Leave the runtime: stop this process's evaluation workers and pool routing,
    stop the tree (children in reverse start order) and, if ``init`` started Ray,
    Ray itself.

    ``stop_tree=None`` stops the tree only if this process created it: a driver
    that attached to a running tree leaves it to the others. ``True`` stops it
    anyway; ``False`` leaves it running (it is detached).
    """
    global _runtime
    with _lock:
        runtime = _runtime
        if runtime is None:
            return
        _runtime = None
        import ray

        _uninstall_seams()
        _disable_pools()
        if not ray.is_initialized():
            return  # Ray was shut down under us: the tree is out of reach (or gone with it)
        try:
            _stop_eval_workers()
            if runtime.root is not None and (runtime.owns_root if stop_tree is None else stop_tree):
                from dspex.runtime.supervision.application import stop_root

                stop_root(runtime.root)
        finally:
            if runtime.started_ray:
                ray.shutdown()


# --- status ----------------------------------------------------------------------------


def status(address: str | None = None, *, recent: int = 5, timeout: float = 10.0) -> dict[str, Any]:
    """The running runtime as a plain dict: ``tree`` (nested, with states and
    restart counts), ``tree_text`` (rendered), ``pools`` (breaker, rate, in flight,
    calls, errors per provider pool) and ``dead_letters`` (``count`` and the
    ``recent`` newest).

    Not connected yet: connects to ``address`` (else ``RAY_ADDRESS``, else the
    local cluster, ``"auto"``) without starting anything. Raises
    ``ClusterUnreachableError``, ``ClusterAuthError`` or ``RuntimeNotRunningError``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    _use_token_if_required(address)  # before Ray's import, which is when Ray reads it
    import ray

    if not ray.is_initialized():
        connect(address)
    from dspex.runtime.supervision.application import collect_status

    return collect_status(recent=recent, timeout=timeout)


def connect(address: str, **ray_kwargs: Any) -> None:
    """Attach this process to the cluster at ``address`` without starting the
    runtime (for readers such as ``dspex status``)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _use_token_if_required(address)  # before Ray's import, which is when Ray reads it
    _start_ray(address, None, ray_kwargs)


# --- connecting to Ray -------------------------------------------------------------------


def _start_ray(address: str | None, num_cpus: int | None, kwargs: dict[str, Any]) -> None:
    import ray

    from dspex.runtime.ray_notices import quiet_token_auth_notice

    quiet_token_auth_notice()  # Ray's "token auth is enabled" notice on every start
    kwargs = {"namespace": NAMESPACE, "log_to_driver": False, **kwargs}
    if address is None:
        # "local" always starts a fresh instance; a bare ray.init() would
        # attach to whichever cluster on this machine started last.
        address = "local"
        kwargs.setdefault("include_dashboard", False)
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    else:
        if num_cpus is not None:
            raise ConfigurationError(
                f"num_cpus applies only when dspex.init() starts a local Ray; the cluster at "
                f"{address} has the CPUs its nodes were started with (ray start --num-cpus)"
            )
        _check_reachable(address)
        _use_token_if_required(address)
        _check_auth(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise ClusterUnreachableError(_unreachable_message(address, exc)) from exc


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``address``."""
    target = _host_port(address)
    if target is None:
        return  # "auto" and other forms: Ray resolves them and fails fast itself
    try:
        with socket.create_connection(target, timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(_unreachable_message(address, exc)) from None


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest in ("auto", "local") or not rest:
        return None
    if rest.startswith("["):  # [::1]:6379
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        return host, int(port) if port else DEFAULT_GCS_PORT
    except ValueError:
        return None


def _unreachable_message(address: str, exc: BaseException) -> str:
    return (
        f"no Ray cluster answered at {address!r} ({type(exc).__name__}: {exc}). Start one with "
        "`dspex cluster start` (or `ray start --head`) and pass its GCS address (host:6379) as "
        "address= or RAY_ADDRESS; or call dspex.init() without an address to start a local Ray."
    )


def _use_token_if_required(address: str | None) -> None:
    """Decide whether this driver sends the cluster's token, before ``ray`` is imported.

    Ray 2.60 sends the token from an explicit-address driver only when
    RAY_AUTH_MODE=token is in the driver's environment (measured: the token file
    alone is not enough), and reads that variable once, when ``ray`` is imported:
    call this before the import. Token mode must not be turned on for a cluster
    without auth: the driver's own RPC server then rejects the cluster's calls, the
    cluster decides the driver dropped its actors and kills them (measured: every
    EvalWorker such a driver started died). So the cluster is asked first; only
    when it cannot be asked (``auto``, TLS) does a token that exists decide.
    """
    if "RAY_AUTH_MODE" in os.environ or not _token_available():
        return
    if _connected_to_ray():
        # Connected already: Ray fixed its auth mode at import, and setting it now would
        # only leak into processes this one starts later (a `ray start`ed node would come
        # up in token mode on a cluster without auth, and never get a worker leased).
        return
    target = _host_port(address) if address else None
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    if target is not None and not tls and _probe_gcs(target, None) == "ok":
        return  # the cluster answers without a token: it runs without auth
    os.environ["RAY_AUTH_MODE"] = "token"


def _connected_to_ray() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _token_available() -> bool:
    """Whether Ray would find a token here."""
    return _token_value() is not None


def _token_value() -> tuple[str, str] | None:
    """``(token, where it came from)`` in Ray's order, or None. Only ever sent to the
    cluster in a header; never logged."""
    from dspex.runtime.auth_token import find_token

    token = find_token()
    return None if token is None else (token.value, token.origin)


TOKEN_HELP = (
    "On the head node `ray get-auth-token` prints the cluster's token (a `dspex cluster start` "
    "cluster uses the file its start message names). Before starting Python, export "
    "RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file holding it> (or save it as "
    "~/.ray/auth_token), and RAY_AUTH_MODE=token."
)


def _check_auth(address: str) -> None:
    """Fail in milliseconds, with what to export, when the cluster refuses this driver.

    Without this Ray retries for 20 s, printing an ``InvalidAuthToken`` warning a
    second, and then reports a connection error. The probe is the first call
    Ray's own client makes (``GetClusterId`` on the GCS), over plain gRPC, with
    the token Ray would send.
    """
    target = _host_port(address)
    if target is None or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS cluster needs Ray's certificates: leave it to ray.init
    verdict = _probe_gcs(target, None)
    if verdict == "unreachable":
        raise ClusterUnreachableError(_unreachable_message(address, ConnectionError("no GCS")))
    if verdict != "unauthenticated":
        return  # no auth, or a server that does not know the call: let ray.init decide
    token = _token_value()
    if token is None:
        raise ClusterAuthError(
            f"the Ray cluster at {address} requires an auth token and none was found here "
            f"(looked at $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token). {TOKEN_HELP}"
        )
    if _probe_gcs(target, token[0]) == "unauthenticated":
        raise ClusterAuthError(
            f"the Ray cluster at {address} rejected the auth token from {token[1]}: it is not "
            f"this cluster's token. {TOKEN_HELP}"
        )
    if os.environ.get("RAY_AUTH_MODE") != "token" or not _ray_sends_token():
        raise ClusterAuthError(
            f"the Ray cluster at {address} needs its auth token, and Ray in this process will "
            "not send it: RAY_AUTH_MODE is not 'token', or `ray` was imported before it was set "
            "(Ray reads it only at import). Export RAY_AUTH_MODE=token before starting Python, "
            "or call dspex.init() before importing ray."
        )


def _probe_gcs(target: tuple[str, int], token: str | None) -> str:
    """``ok``, ``unauthenticated``, ``unreachable`` or ``other``: how the GCS answers."""
    import grpc  # a dependency of Ray; importing it does not import (or configure) Ray

    host, port = target
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(endpoint) as channel:
        # GetClusterIdRequest has no fields: its encoding is empty bytes.
        call = channel.unary_unary(
            "/ray.rpc.NodeInfoGcsService/GetClusterId",
            request_serializer=lambda _: b"",
            response_deserializer=lambda data: data,
        )
        try:
            call(None, timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "unreachable"
            return "other"
    return "ok"


def _ray_sends_token() -> bool:
    """Whether the imported Ray is in token mode (it fixed that at import)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # another Ray version: nothing to check against
        return True
    return bool(is_token_auth_enabled())


def _merged_runtime_env(user: dict[str, Any] | None) -> dict[str, Any]:
    """dspex's worker variables and setup hook under the user's ``runtime_env``
    (the user's values win; a user's hook is composed with ours)."""
    from dspex.runtime.worker_setup import with_setup_hook

    job = _job_runtime_env()
    env = dict(user or {})
    # In a submitted job Ray merges the job's runtime_env with ours and rejects
    # a variable set by both: the job's value stands, so leave ours out.
    job_vars = job.get("env_vars") or {}
    ours = {k: v for k, v in WORKER_ENV.items() if k not in job_vars}
    env["env_vars"] = {**ours, **(env.get("env_vars") or {})}
    return with_setup_hook(env, job)


def _job_runtime_env() -> dict[str, Any]:
    """The runtime_env of the submitted job this driver runs in (empty outside a job)."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError, TypeError):
        return {}


def _note_ignored(
    address: str | None, num_cpus: int | None, runtime_env: Any, ray_kwargs: dict[str, Any]
) -> None:
    if address or num_cpus is not None or runtime_env or ray_kwargs:
        log.warning(
            "dspex.init: Ray is already initialised in this process; using that connection "
            "(address, num_cpus, runtime_env and Ray options are ignored)"
        )


# --- the parts init/shutdown drive -------------------------------------------------------


def _start_root() -> tuple[Any, bool]:
    from dspex.runtime.supervision.application import ensure_root

    return ensure_root()


def _install_seams() -> None:
    from dspex.runtime import seams

    seams.install()


def _uninstall_seams() -> None:
    from dspex.runtime import seams

    seams.uninstall()


def _enable_pools() -> None:
    from dspex.runtime.pools.pool_client import enable_pools

    enable_pools()


def _disable_pools() -> None:
    from dspex.runtime.pools.pool_client import disable_pools, forget_pool_handles

    disable_pools()
    forget_pool_handles()  # pools of a stopped tree are gone; a later init re-resolves


def _stop_eval_workers() -> None:
    from dspex.runtime.evaluation.ray_runner import shutdown_pool

    shutdown_pool()


__all__ = [
    "ClusterAuthError",
    "ClusterUnreachableError",
    "NAMESPACE",
    "ROOT_SUPERVISOR",
    "Runtime",
    "RuntimeNotRunningError",
    "active",
    "connect",
    "current",
    "init",
    "shutdown",
    "status",
]
