"""Fixtures of the privacy tests: a recording server (`privacy_helpers.RecordingServer`)
and an isolated LM cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from privacy_helpers import RecordingServer


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    recording.start()
    try:
        yield recording
    finally:
        recording.stop()
