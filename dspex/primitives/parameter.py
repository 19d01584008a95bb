"""`Parameter`: a learnable part of a program (dspex's `Predict` is one).

Optimizers find parameters with `Module.named_parameters()`, read and write
their learned state with `dump_state`/`load_state`, and clear it with `reset`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

# Attributes that hold clients (an LM with its connection pool, locks and API
# key), not learned state: a copy of a program shares them.
SHARED_ON_COPY = frozenset({"lm"})


def deepcopy_attributes(
    obj: Any, memo: dict[int, Any], fresh: Mapping[str, Callable[[], Any]] | None = None
) -> Any:
    """Deep-copy ``obj`` attribute by attribute, for ``__deepcopy__``.

    ``lm`` attributes are shared, and so is any value that cannot be
    deep-copied (after copying what it can of lists, tuples and dicts), so one
    client holding a lock does not make the whole copy fail. Attributes named in
    ``fresh`` are not copied: the copy gets a new value from its factory.
    """
    cls = type(obj)
    new = cls.__new__(cls)
    memo[id(obj)] = new
    for name, value in vars(obj).items():
        if fresh is not None and name in fresh:
            new.__dict__[name] = fresh[name]()
        elif name in SHARED_ON_COPY:
            new.__dict__[name] = value
        else:
            new.__dict__[name] = copy_value(value, memo)
    return new


def copy_value(value: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(value, memo)``, falling back to sharing what cannot be copied."""
    if id(value) in memo:
        return memo[id(value)]
    snapshot = dict(memo)
    try:
        return copy.deepcopy(value, memo)
    except Exception:
        # Drop the half-built copies the failed attempt left in the memo.
        memo.clear()
        memo.update(snapshot)
    if isinstance(value, list):
        new_list: list[Any] = []
        memo[id(value)] = new_list
        new_list.extend(copy_value(item, memo) for item in value)
        return new_list
    if isinstance(value, tuple):
        return tuple(copy_value(item, memo) for item in value)
    if isinstance(value, dict):
        new_dict: dict[Any, Any] = {}
        memo[id(value)] = new_dict
        new_dict.update((k, copy_value(v, memo)) for k, v in value.items())
        return new_dict
    return value


class Parameter:
    """Base class of learnable parts. Subclasses implement the three methods.

    The state must be plain JSON-able data (dicts, lists, str, numbers; pydantic
    models are dumped by `Module.save`) and must never hold an API key.
    A predictor also has an ``lm`` attribute (None when it uses ``settings.lm``).
    ``copy.deepcopy`` copies a parameter's attributes but shares its ``lm``.
    """

    def dump_state(self) -> dict[str, Any]:
        """The learned state (demos, instructions, ...) as plain data."""
        raise NotImplementedError(f"{type(self).__name__} must implement dump_state()")

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `dump_state` returned."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_state(state)")

    def reset(self) -> None:
        """Forget everything learned (demos, traces, per-predictor LM)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset()")

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # Learned state is copied; the predictor's LM (a client) is shared.
        return deepcopy_attributes(self, memo)
