from __future__ import annotations

import subprocess
import sys

import pytest

from dspex.primitives import Parameter


def test_parameter_methods_must_be_implemented() -> None:
    class Bare(Parameter):
        pass

    bare = Bare()
    with pytest.raises(NotImplementedError, match=r"Bare must implement dump_state\(\)"):
        bare.dump_state()
    with pytest.raises(NotImplementedError, match="load_state"):
        bare.load_state({})
    with pytest.raises(NotImplementedError, match="reset"):
        bare.reset()


def test_importing_primitives_defers_pickling_support() -> None:
    code = "import sys, dspex.primitives; print('cloudpickle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
