from __future__ import annotations

import pytest
from _fakes import ScriptedLM


@pytest.fixture
def scripted_lm() -> type[ScriptedLM]:
    return ScriptedLM
