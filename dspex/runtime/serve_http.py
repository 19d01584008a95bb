"""A served program over HTTP: ``dspex.serve(program, name="qa", http=True)``.

`HttpIngress` is one more supervised child of ``dspex.services``
(``dspex.serve.qa.http``): an aiohttp server in a Ray actor, listening on
127.0.0.1 unless a host is given, that answers ``POST /qa`` by calling the
replicas through a `ServiceHandle` (one actor hop), so HTTP requests get the
same replica choice, retry on a replica's death, dead letters and drain during
an update as calls from Python. The port it bound on its first start is written
into its child spec, so a restarted ingress listens at the same address.

Why not Ray Serve's HTTP proxy (measured with ``benchmarks/serve_http.py
--ray-serve``, Ray 2.60, 2 cores, a program that calls no LM): this ingress answered
at 2.8-3.5 ms median and 750-860 requests/s; Ray Serve's proxy in front of the same
supervised replicas at 10.3 ms and 153 requests/s, and the program deployed as Ray
Serve replicas (no supervision, retries or dead letters) at 8.4 ms and 137
requests/s. ``ray[serve]`` is also not in ``ray[default]`` (it adds starlette,
fastapi and uvicorn, a controller actor and a proxy actor per node), and Ray Serve
restarts its replicas with its own controller, which would compete with the
supervision tree and bypass the dead letters.

The request body is a JSON object of the program's input fields; the answer is
``{"outputs": {...}, "usage": {...}}``. Bad requests get a 4xx with a JSON body
naming the field (``fields``: ``[{"field": ..., "problem": ...}]``); a request
whose replicas died is answered 503 with the ``dead_letter_id`` of its entry in
``dspex.dead_letters()``. ``Accept: text/event-stream`` (or ``?stream=<field>``,
repeated for more fields) streams the answer as server-sent events: ``chunk``
events of the listened fields, ``status`` events, then one ``prediction`` event
(or an ``error`` event).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from dspex.runtime.supervision.child import Supervised

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB of JSON inputs; images should travel as URLs
LOOPBACK = "127.0.0.1"


# --- the inputs a program takes --------------------------------------------------------


def input_fields(program: Any) -> dict[str, tuple[Any, bool]] | None:
    """``{field: (annotation, required)}`` of the inputs ``program`` takes, or None when it
    takes any keywords (no checking then). From its signature when it has one (Predict),
    else from the parameters of its ``aforward``/``forward``, else (keywords passed on)
    from its predictor's signature when it has exactly one (ChainOfThought)."""
    signature = getattr(program, "signature", None)
    fields = getattr(signature, "input_fields", None)
    if isinstance(fields, Mapping) and fields:
        return {
            name: (getattr(info, "annotation", Any) or Any, True) for name, info in fields.items()
        }
    for method_name in ("aforward", "forward"):
        method = getattr(program, method_name, None)
        if method is None:
            continue
        try:
            parameters = _parameters(method)
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            continue  # a pass-through (Module.aforward calls forward): look at the other
        found = {
            p.name: (Any if p.annotation is inspect.Parameter.empty else p.annotation, p.default is inspect.Parameter.empty)
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        if found:
            return found
    # A module that passes its keywords on to its one predictor (ChainOfThought, ...)
    # takes that predictor's inputs.
    named = getattr(program, "named_predictors", None)
    predictors = list(named()) if callable(named) else []
    if len(predictors) == 1:
        return input_fields(predictors[0][1])
    return None


def _parameters(method: Any) -> list[inspect.Parameter]:
    # Annotations are often strings (``from __future__ import annotations``): evaluate them,
    # or check only the names when they do not evaluate.
    try:
        return list(inspect.signature(method, eval_str=True).parameters.values())
    except Exception:
        return list(inspect.signature(method).parameters.values())


def _input_model(fields: dict[str, tuple[Any, bool]] | None) -> Any:
    """A pydantic model checking a request body against ``fields`` (None: no checking)."""
    from pydantic import ConfigDict, create_model

    if fields is None:
        return None
    definitions: dict[str, Any] = {}
    for name, (annotation, required) in fields.items():
        annotation = annotation if isinstance(annotation, type) or _is_typing_form(annotation) else Any
        definitions[name] = (annotation, ... if required else None)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    try:
        return create_model("Inputs", __config__=config, **definitions)
    except Exception:  # an annotation pydantic cannot check: check names only
        loose = {name: (Any, ... if required else None) for name, (_, required) in fields.items()}
        return create_model("Inputs", __config__=config, **loose)


def _is_typing_form(annotation: Any) -> bool:
    return getattr(annotation, "__module__", "") in ("typing", "types") or hasattr(annotation, "__origin__")


def _field_problems(error: Any) -> list[dict[str, str]]:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ())) or "(body)"
        kind = item.get("type", "")
        if kind == "missing":
            problem = "missing"
        elif kind == "extra_forbidden":
            problem = "not an input of this program"
        else:
            problem = str(item.get("msg", "invalid value"))
        problems.append({"field": location, "problem": problem})
    return problems


# --- shaping answers ---------------------------------------------------------------


def to_json_ready(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (pydantic models, Examples, sets...; else its str)."""
    from pydantic_core import to_jsonable_python

    to_dict = getattr(value, "toDict", None)
    if callable(to_dict):
        value = to_dict()
    return to_jsonable_python(value, fallback=str)


def answer_body(result: Any) -> dict[str, Any]:
    """``{"outputs": ..., "usage": ...}`` for what the program returned."""
    usage = None
    get_usage = getattr(result, "get_lm_usage", None)
    if callable(get_usage):
        usage = get_usage()
    outputs = to_json_ready(result)
    if not isinstance(outputs, dict):
        outputs = {"output": outputs}
    return {"outputs": outputs, "usage": to_json_ready(usage or {})}


def _stream_event(item: Any) -> tuple[str, dict[str, Any]]:
    from dspex.streaming.messages import StatusMessage, StreamResponse

    if isinstance(item, StreamResponse):
        return "chunk", {
            "field": item.signature_field_name,
            "predictor": item.predict_name,
            "chunk": item.chunk,
            "last": item.is_last_chunk,
        }
    if isinstance(item, StatusMessage):
        return "status", {"message": item.message}
    return "prediction", answer_body(item)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# --- the ingress actor -----------------------------------------------------------------


class HttpIngress(Supervised):
    """The HTTP front of one served program; started by the ``dspex.services`` supervisor.

    ``fields``: the program's inputs, cloudpickled (`input_fields`); ``port`` 0 binds a
    free port (the caller then writes it into this child's spec).
    """

    def __init__(
        self,
        service: str,
        replicas: tuple[str, ...],
        *,
        fields: bytes,
        host: str = LOOPBACK,
        port: int = 0,
        retries: int = 1,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        from dspex.runtime.serve import ServiceHandle

        self.service = service
        self.host = host
        self.port = port
        self.max_body = max_body
        self._handle = ServiceHandle(service, replicas, retries=retries)
        self.set_fields(fields)
        self._runner: Any = None
        self._served = 0

    def set_fields(self, fields: bytes) -> None:
        """Check requests against these inputs from now on (after an update)."""
        from ray import cloudpickle

        self._fields: dict[str, tuple[Any, bool]] | None = cloudpickle.loads(fields)
        self._model = _input_model(self._fields)

    async def ready(self) -> dict[str, Any]:
        """Start listening, then report like any child (the supervisor calls this once)."""
        from aiohttp import web

        if self._runner is None:
            app = web.Application(client_max_size=self.max_body)
            app.router.add_post(f"/{self.service}", self._answer)
            app.router.add_get(f"/{self.service}", self._describe)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            self._runner = runner
            self.port = runner.addresses[0][1]
        return await super().ready()

    async def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{self.service}"

    async def stats(self) -> dict[str, Any]:
        return {"service": self.service, "pid": os.getpid(), "port": self.port, "served": self._served}

    async def terminate(self, reason: str) -> None:
        del reason
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, lets open requests finish
            self._runner = None

    # --- requests ----------------------------------------------------------------

    async def _describe(self, request: Any) -> Any:
        from aiohttp import web

        del request
        fields = None if self._fields is None else {
            name: {"required": required, "type": getattr(annotation, "__name__", str(annotation))}
            for name, (annotation, required) in self._fields.items()
        }
        return web.json_response({"service": self.service, "inputs": fields})

    async def _answer(self, request: Any) -> Any:
        from aiohttp import web

        from dspex.errors import ReplicaDiedError, ServiceUnavailableError

        inputs_or_error = await self._read_inputs(request)
        if isinstance(inputs_or_error, web.Response):
            return inputs_or_error
        inputs = inputs_or_error
        listened = request.query.getall("stream", [])
        if listened or "text/event-stream" in request.headers.get("Accept", ""):
            return await self._stream(request, inputs, [f for f in listened if f not in ("", "1", "true")])
        try:
            result = await self._handle.acall(**inputs)
        except ReplicaDiedError as exc:
            return _error(503, "the replicas died answering this request", dead_letter_id=exc.dead_letter_id)
        except ServiceUnavailableError as exc:
            return _error(503, str(exc))
        except Exception as exc:  # the program's own error
            return _error(500, _safe_message(exc), type=type(exc).__name__)
        self._served += 1
        return web.json_response(answer_body(result), dumps=json.dumps)

    async def _read_inputs(self, request: Any) -> Any:
        from aiohttp import web
        from pydantic import ValidationError

        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {self.max_body} bytes", limit=self.max_body)
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            return _error(400, f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object of the program's input fields")
        if self._model is None:
            return body
        try:
            checked = self._model.model_validate(body)
        except ValidationError as exc:
            problems = _field_problems(exc)
            names = ", ".join(p["field"] for p in problems)
            return _error(422, f"invalid input: {names}", fields=problems)
        # Only the fields the caller sent: optional parameters keep the program's defaults.
        return {name: getattr(checked, name) for name in body}

    async def _stream(self, request: Any, inputs: dict[str, Any], fields: list[str]) -> Any:
        from aiohttp import web

        from dspex.errors import ReplicaDiedError
        from dspex.streaming import StreamListener

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        items = self._handle.stream(
            stream_listeners=[StreamListener(field) for field in fields], **inputs
        )
        try:
            async for item in items:
                event, data = _stream_event(item)
                await response.write(_sse(event, data))
        except ReplicaDiedError as exc:
            await response.write(_sse("error", {"status": 503, "error": str(exc), "dead_letter_id": exc.dead_letter_id}))
        except (ConnectionResetError, OSError):
            return response  # the client left: the generator's close cancels the run
        except Exception as exc:
            await response.write(_sse("error", {"status": 500, "error": _safe_message(exc), "type": type(exc).__name__}))
        finally:
            await items.aclose()
        self._served += 1
        await response.write_eof()
        return response


def _error(status: int, message: str, **extra: Any) -> Any:
    from aiohttp import web

    return web.json_response({"error": message, **extra}, status=status)


def _safe_message(exc: BaseException) -> str:
    from dspex.observability.redact import redact

    return redact(str(exc))[:2000]


def ingress_name(service: str) -> str:
    from dspex.runtime.names import SERVICE_PREFIX

    return f"{SERVICE_PREFIX}{service}.http"


__all__ = ["HttpIngress", "answer_body", "ingress_name", "input_fields"]
