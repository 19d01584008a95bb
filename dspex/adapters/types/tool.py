"""Tools an LM can call, and the calls it asks for.

- `Tool` wraps a typed Python function (sync or async) or a callable object. Its
  name, description and a JSON schema per argument come from the function's
  name, docstring and type hints; calls are checked against the hints by pydantic
  and a mismatch raises `ToolArgumentError`, which an agent shows the LM.
- `ToolCalls` is an output field type: the list of calls (name and arguments)
  an LM asks for, runnable against a list of tools.
- `ToolCallResults` records what those calls returned.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic
from pydantic import TypeAdapter, ValidationError

from dspex.adapters.types.base import Type
from dspex.errors import ToolArgumentError, ToolExecutionError, ToolNotFoundError
from dspex.privacy import session as privacy
from dspex.utils.callback import with_callbacks


class Tool(Type):
    """A function the LM may call: ``Tool(search)``, ``Tool(obj, name="lookup")``.

    ``args`` maps each argument name to its JSON schema (a ``default`` when the
    parameter has one); pass it to override what the hints say.
    """

    func: Any
    name: str = ""
    desc: str = ""
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    arg_types: dict[str, Any] = pydantic.Field(default_factory=dict)
    arg_desc: dict[str, str] = pydantic.Field(default_factory=dict)
    has_kwargs: bool = False

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, Any] | None = None,
        arg_types: dict[str, Any] | None = None,
        arg_desc: dict[str, str] | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"Tool(...) takes a function or a callable object, got {type(func).__name__}")
        found = _describe_callable(func, arg_desc or {})
        super().__init__(
            func=func,
            name=name or found.name,
            desc=desc if desc is not None else found.desc,
            args=args if args is not None else found.args,
            arg_types=arg_types if arg_types is not None else found.arg_types,
            arg_desc=arg_desc or {},
            has_kwargs=found.has_kwargs,
        )

    # --- calling ---------------------------------------------------------------------

    @with_callbacks
    def __call__(self, **kwargs: Any) -> Any:
        # Inside a redacted program call (dspex.privacy) the tool, local code, gets the
        # real values and what it returns goes back to the program as placeholders.
        result = self.func(**privacy.reveal(self.validate_args(kwargs)))
        if inspect.isawaitable(result):
            # An async tool called from sync code: run it to completion here.
            from dspex.utils.aio import run_sync

            return privacy.redacted_in_session(run_sync(_awaited(result)))
        return privacy.redacted_in_session(result)

    @with_callbacks
    async def acall(self, **kwargs: Any) -> Any:
        """Call the tool from async code: awaited when async, else run in a worker
        thread so a slow sync tool does not block the event loop."""
        parsed = privacy.reveal(self.validate_args(kwargs))  # see __call__
        if _is_async_callable(self.func):
            return privacy.redacted_in_session(await self.func(**parsed))
        result = await asyncio.to_thread(self.func, **parsed)
        if inspect.isawaitable(result):
            result = await result
        return privacy.redacted_in_session(result)

    def validate_args(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments converted to the hinted types, or `ToolArgumentError` listing
        every problem (unknown, missing, wrong type) so the LM can fix them at once."""
        if not isinstance(kwargs, Mapping):
            raise ToolArgumentError(
                f"tool {self.name!r} takes its arguments as a JSON object, got {kwargs!r:.200}",
                tool=self.name,
                problems=["arguments are not an object"],
            )
        problems: list[str] = []
        parsed: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in self.args and not self.has_kwargs:
                problems.append(f"unknown argument {key!r}")
                continue
            annotation = self.arg_types.get(key, Any)
            if annotation is Any:
                parsed[key] = value
                continue
            try:
                parsed[key] = _validator(annotation).validate_python(value)
            except ValidationError as exc:
                detail = "; ".join(e["msg"] for e in exc.errors()[:3])
                problems.append(f"argument {key!r}={value!r:.100}: {detail}")
        for key, schema in self.args.items():
            if key not in kwargs and "default" not in schema and key in self.arg_types:
                problems.append(f"missing required argument {key!r}")
        if problems:
            expected = ", ".join(self.args) or "no arguments"
            raise ToolArgumentError(
                f"bad arguments for tool {self.name!r}: {'; '.join(problems)} (it takes: {expected})",
                tool=self.name,
                problems=problems,
            )
        return parsed

    # --- describing ----------------------------------------------------------------

    def format(self) -> str:
        return str(self)

    def format_as_function_call(self) -> dict[str, Any]:
        """The tool in the OpenAI ``tools`` request shape."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.desc,
                "parameters": {
                    "type": "object",
                    "properties": self.args,
                    "required": [k for k, schema in self.args.items() if "default" not in schema],
                },
            },
        }

    # DSPy's name for the same shape.
    format_as_litellm_function_call = format_as_function_call

    @pydantic.model_serializer
    def _as_description(self) -> dict[str, Any]:
        # In a prompt (a list of tools in an input field) a tool is what it does,
        # not its Python function.
        return {"name": self.name, "description": self.desc, "arguments": self.args}

    def __str__(self) -> str:
        summary = " ".join(self.desc.split()) if self.desc else "(no description)"
        return f"{self.name}: {summary} Arguments (JSON schema per argument): {json.dumps(self.args, default=str)}"

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, desc={self.desc!r}, args={self.args!r})"


class _Description(typing.NamedTuple):
    name: str
    desc: str
    args: dict[str, Any]
    arg_types: dict[str, Any]
    has_kwargs: bool


def _describe_callable(func: Callable[..., Any], arg_desc: Mapping[str, str]) -> _Description:
    # A callable object's hints live on its class's __call__.
    target = func if inspect.isfunction(func) or inspect.ismethod(func) else type(func).__call__
    name = getattr(func, "__name__", None) or type(func).__name__
    desc = inspect.getdoc(func) or ""
    if not desc and target is not func:
        desc = inspect.getdoc(target) or ""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no types
        hints = {}
    args: dict[str, Any] = {}
    arg_types: dict[str, Any] = {}
    has_kwargs = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            has_kwargs = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        annotation = hints.get(param.name, Any)
        arg_types[param.name] = annotation
        schema = _json_schema(annotation)
        if param.default is not param.empty:
            schema["default"] = _jsonable_default(param.default)
        if param.name in arg_desc:
            schema["description"] = arg_desc[param.name]
        args[param.name] = schema
    return _Description(name, desc, args, arg_types, has_kwargs)


def _json_schema(annotation: Any) -> dict[str, Any]:
    if annotation is Any:
        return {}
    try:
        return _inline_refs(TypeAdapter(annotation).json_schema())
    except Exception:  # a type pydantic cannot describe: say nothing rather than fail
        return {}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``$ref``s replaced by their definitions (LMs read it inline)."""
    definitions = schema.pop("$defs", None)
    if not definitions:
        return schema

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in definitions:
                return resolve(definitions[ref.rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _jsonable_default(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _validator(annotation: Any) -> TypeAdapter[Any]:
    from dspex.adapters.values import validator_for

    try:
        return validator_for(annotation)
    except TypeError:  # an unhashable annotation cannot be cached
        return TypeAdapter(annotation)


def _is_async_callable(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


# --- calls the LM asks for ------------------------------------------------------------


class ToolCalls(Type):
    """The tool calls an LM asks for: ``ToolCalls(tool_calls=[ToolCall(name=..., args=...)])``.

    Accepts, as a field value, a list of ``{"name", "args"}`` objects, one such
    object, ``{"tool_calls": [...]}``, or OpenAI-shaped calls
    (``{"id", "function": {"name", "arguments": "<json>"}}``).
    """

    class ToolCall(Type):
        name: str
        args: dict[str, Any] = pydantic.Field(default_factory=dict)
        id: str | None = None
        #: why the arguments the model sent could not be read (then ``args`` is empty
        #: and running the call raises `ToolArgumentError` with this reason)
        args_error: str | None = None

        def format(self) -> dict[str, Any]:
            return {"name": self.name, "args": self.args}

        @classmethod
        def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
            # The id is bookkeeping for providers' native calls; an LM writing calls as
            # text is not asked for it. Arguments are an open object.
            schema = handler.resolve_ref_schema(handler(core_schema))
            schema.get("properties", {}).pop("id", None)
            schema.get("properties", {}).pop("args_error", None)
            schema.get("properties", {}).get("args", {})["additionalProperties"] = True
            # The LM is asked for args always (parsing still accepts a call without them).
            schema["required"] = ["name", "args"]
            return schema

        def _tool(self, tools: ToolSet | None, caller: Any = None) -> Callable[..., Any]:
            found = _find_tool(self.name, tools) if tools is not None else _caller_function(self.name, caller)
            if found is None:
                raise ToolNotFoundError(
                    f"tool {self.name!r} not found among the tools given; pass the tool (or a "
                    "{name: function} dict) to execute()"
                )
            return found

        def _check_readable(self) -> None:
            if self.args_error is not None:
                raise ToolArgumentError(
                    f"bad arguments for tool {self.name!r}: {self.args_error}",
                    tool=self.name,
                    problems=[self.args_error],
                )

        def execute(self, functions: ToolSet | None = None) -> Any:
            """Run this call with the named tool; its failure is `ToolExecutionError`.

            Without ``functions`` the tool is looked up by name among the caller's
            local, then global, names."""
            tool = self._tool(functions, inspect.currentframe())
            self._check_readable()
            if isinstance(tool, Tool):
                tool.validate_args(self.args)
            try:
                return tool(**self.args)
            except ToolArgumentError:
                raise
            except Exception as exc:
                raise ToolExecutionError(f"tool {self.name!r} raised {type(exc).__name__}: {exc}") from exc

        async def aexecute(self, functions: ToolSet | None = None) -> Any:
            tool = self._tool(functions, inspect.currentframe())
            self._check_readable()
            if not isinstance(tool, Tool):
                tool = Tool(tool, name=self.name)
            tool.validate_args(self.args)
            try:
                return await tool.acall(**self.args)
            except Exception as exc:
                raise ToolExecutionError(f"tool {self.name!r} raised {type(exc).__name__}: {exc}") from exc

    tool_calls: list[ToolCall]
    tool_call_results: Any = None

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: Iterable[Mapping[str, Any]]) -> ToolCalls:
        return cls(tool_calls=[cls.ToolCall(**_normalize_call(item)) for item in tool_calls_dicts])

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"tool_calls": [_call_value(item) for item in data]}
        if isinstance(data, dict):
            if "tool_calls" in data and isinstance(data["tool_calls"], list):
                return {**data, "tool_calls": [_call_value(item) for item in data["tool_calls"]]}
            if _looks_like_call(data):
                return {"tool_calls": [_normalize_call(data)]}
        return data

    @pydantic.model_serializer
    def _as_calls(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tool_calls": [{"name": c.name, "args": c.args} for c in self.tool_calls]}
        if self.tool_call_results is not None:
            data["tool_call_results"] = TypeAdapter(Any).dump_python(self.tool_call_results, mode="json")
        return data

    def format(self) -> dict[str, Any]:
        # What the LM reads and writes: the calls, not their ids or results.
        return {"tool_calls": [call.format() for call in self.tool_calls]}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema.get("properties", {}).pop("tool_call_results", None)
        schema["required"] = [name for name in schema.get("required", []) if name != "tool_call_results"]
        return schema

    @classmethod
    def description(cls) -> str:
        return (
            'A JSON object {"tool_calls": [{"name": <tool name>, "args": {<argument>: <value>}}, ...]}, '
            "one entry per call to make."
        )

    def execute(self, functions: ToolSet) -> list[Any]:
        """Run every call in order; the results, one per call."""
        return [call.execute(functions) for call in self.tool_calls]

    async def aexecute(self, functions: ToolSet) -> list[Any]:
        """Run the calls concurrently; the results in call order."""
        return list(await asyncio.gather(*(call.aexecute(functions) for call in self.tool_calls)))


#: what `execute` looks tools up in: Tools (or plain functions), or a {name: function} dict
ToolSet = Iterable[Any] | Mapping[str, Callable[..., Any]]


def _find_tool(name: str, tools: ToolSet) -> Callable[..., Any] | None:
    if isinstance(tools, Mapping):
        return tools.get(name)
    for tool in tools:
        tool_name = tool.name if isinstance(tool, Tool) else getattr(tool, "__name__", None)
        if tool_name == name:
            return tool
    return None


def _caller_function(name: str, frame: Any) -> Callable[..., Any] | None:
    """``name`` among the names where `execute` was called: locals first, then globals."""
    caller = frame.f_back if frame is not None else None
    try:
        if caller is None:
            return None
        found = caller.f_locals.get(name)
        if found is None:
            found = caller.f_globals.get(name)
        return found if callable(found) else None
    finally:
        del frame, caller


def _looks_like_call(data: Mapping[str, Any]) -> bool:
    return "function" in data or ("name" in data and ("args" in data or "arguments" in data))


def _call_value(item: Any) -> Any:
    return _normalize_call(item) if isinstance(item, Mapping) else item


def _normalize_call(data: Mapping[str, Any]) -> dict[str, Any]:
    """A call in dspex's shape from dspex's, OpenAI's or Anthropic's."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a tool call must be an object with a name and args, got {data!r:.200}")
    function = data.get("function")
    if function is not None and not isinstance(function, Mapping):
        raise ValueError(f"a tool call has an invalid function value (expected an object): {function!r:.200}")
    if isinstance(function, Mapping):
        name, arguments = function.get("name") or data.get("name"), function.get("arguments", {})
    else:
        name = data.get("name")
        arguments = data.get("args", data.get("arguments", data.get("input", {})))
    problem = None
    if arguments is None:
        arguments = {}
    elif isinstance(arguments, str):
        arguments = _decode_arguments(arguments)
        if arguments is None:
            problem = f"the model's arguments are not a JSON object: {_raw_arguments(data)!r:.300}"
            arguments = {}
    elif not isinstance(arguments, Mapping):
        problem = f"the model's arguments are not an object: {arguments!r:.300}"
        arguments = {}
    call = {"id": data.get("id") or data.get("call_id"), "name": name, "args": dict(arguments)}
    if problem is not None:
        call["args_error"] = problem
    elif data.get("args_error") is not None:
        call["args_error"] = data["args_error"]
    return call


def _raw_arguments(data: Mapping[str, Any]) -> Any:
    function = data.get("function")
    if isinstance(function, Mapping):
        return function.get("arguments")
    return data.get("args", data.get("arguments", data.get("input")))


def _decode_arguments(text: str) -> dict[str, Any] | None:
    """The object in the arguments text (leniently: a trailing comma or single quotes
    are read), {} for no text, None when there is no object to read."""
    from dspex.adapters.values import extract_json_object

    if not text.strip():
        return {}
    return extract_json_object(text)


class ToolCallResults(pydantic.BaseModel):
    """What tool calls returned: one `ToolCallResult` per call (value, or error text)."""

    class ToolCallResult(pydantic.BaseModel):
        call_id: str | None = None
        name: str
        value: Any
        is_error: bool = False

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: ToolCalls | list[ToolCalls.ToolCall],
        values: list[Any],
        is_errors: list[bool] | None = None,
    ) -> ToolCallResults:
        calls = tool_calls.tool_calls if isinstance(tool_calls, ToolCalls) else list(tool_calls)
        if len(calls) != len(values):
            raise ValueError(f"{len(calls)} tool calls but {len(values)} values: give one value per call")
        errors = list(is_errors) if is_errors is not None else [False] * len(calls)
        if len(errors) != len(calls):
            raise ValueError(f"{len(calls)} tool calls but {len(errors)} is_errors flags: give one per call")
        return cls(
            tool_call_results=[
                cls.ToolCallResult(call_id=call.id, name=call.name, value=value, is_error=error)
                for call, value, error in zip(calls, values, errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, dict) and "tool_call_results" not in data and {"name", "value"} <= set(data):
            return {"tool_call_results": [data]}
        return data


__all__ = ["Tool", "ToolCallResults", "ToolCalls"]
