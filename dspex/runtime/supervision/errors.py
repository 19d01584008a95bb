"""The supervision layer's errors, under the import path they had before they moved.

They are defined in `dspex.errors` with every other public exception (the
hierarchy is drawn there); this module re-exports them so
``from dspex.runtime.supervision.errors import ChildStartError`` keeps working.
"""

from __future__ import annotations

from dspex.errors import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
    ChildStartError,
    InvalidChildSpecError,
    ServiceRestartedError,
    ServiceUnavailableError,
    SupervisorError,
    SupervisorStoppedError,
)

__all__ = [
    "ChildAlreadyExistsError",
    "ChildNotFoundError",
    "ChildRunningError",
    "ChildStartError",
    "InvalidChildSpecError",
    "ServiceRestartedError",
    "ServiceUnavailableError",
    "SupervisorError",
    "SupervisorStoppedError",
]
