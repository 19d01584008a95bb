"""A program for `dspex serve tests/runtime/scripts/served_program.py:Greeter` (a class:
the command instantiates it)."""

from __future__ import annotations

import dspex


class Greeter(dspex.Module):
    def forward(self, name: str) -> dspex.Prediction:
        return dspex.Prediction(greeting=f"hello {name}")
