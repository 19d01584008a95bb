"""Types whose prompt format may still change: documents and citations."""

from dspex.adapters.types.citation import Citation, Citations, Document

__all__ = ["Citation", "Citations", "Document"]
