"""Adapters: turn a signature, demos and inputs into messages, and replies into values."""

from dspex.adapters.base import Adapter, AdapterResult
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter

__all__ = ["Adapter", "AdapterResult", "ChatAdapter", "JSONAdapter"]
