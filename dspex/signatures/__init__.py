"""Signatures: typed inputs, outputs and instructions of one LM step."""

from dspex.signatures.field import FieldSpec, InputField, OutputField
from dspex.signatures.signature import (
    Signature,
    SignatureMeta,
    ensure_signature,
    make_signature,
)
from dspex.signatures.types import type_name

__all__ = [
    "FieldSpec",
    "InputField",
    "OutputField",
    "Signature",
    "SignatureMeta",
    "ensure_signature",
    "make_signature",
    "type_name",
]
