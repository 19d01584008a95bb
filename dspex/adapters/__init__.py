"""Adapters: turn a signature, demos and inputs into messages, and replies into values."""

from dspex.adapters.base import Adapter, AdapterResult
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.types import (
    Audio,
    Code,
    File,
    History,
    Image,
    Reasoning,
    Tool,
    ToolCallResults,
    ToolCalls,
    Type,
)
from dspex.adapters.xml_adapter import XMLAdapter

__all__ = [
    "Adapter",
    "AdapterResult",
    "Audio",
    "ChatAdapter",
    "Code",
    "File",
    "History",
    "Image",
    "JSONAdapter",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
    "XMLAdapter",
]
