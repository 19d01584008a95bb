"""Value types with their own prompt rendering: conversation history, code,
reasoning, documents and citations. Each is a pydantic model, so it validates
like any field type; `Type` subclasses also say how they appear in a prompt."""

from dspex.adapters.types.base import Type
from dspex.adapters.types.citation import Citations, Document
from dspex.adapters.types.code import Code
from dspex.adapters.types.history import History
from dspex.adapters.types.reasoning import Reasoning
from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls

__all__ = ["Citations", "Code", "Document", "History", "Reasoning", "Tool", "ToolCallResults", "ToolCalls", "Type"]
