"""Value types with their own prompt rendering: images, audio, files, conversation
history, code, reasoning, documents and citations. Each is a pydantic model, so it validates
like any field type; `Type` subclasses also say how they appear in a prompt."""

from dspex.adapters.types.audio import Audio
from dspex.adapters.types.base import Type
from dspex.adapters.types.citation import Citations, Document
from dspex.adapters.types.code import Code
from dspex.adapters.types.file import File
from dspex.adapters.types.history import History
from dspex.adapters.types.image import Image
from dspex.adapters.types.reasoning import Reasoning
from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls

__all__ = [
    "Audio",
    "Citations",
    "Code",
    "Document",
    "File",
    "History",
    "Image",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
]
