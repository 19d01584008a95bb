"""Restart intensity (OTP ``add_restart``) with a fake clock."""

from __future__ import annotations

import pytest

from dspex.runtime.supervision import InvalidChildSpecError, RestartIntensity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restarts_up_to_the_limit_are_allowed_and_the_next_is_not() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(3, 5.0, clock=clock)
    assert [intensity.add_restart() for _ in range(3)] == [True, True, True]
    assert intensity.add_restart() is False


def test_stamps_older_than_the_window_are_dropped() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(2, 5.0, clock=clock)
    assert intensity.add_restart() and intensity.add_restart()
    clock.now += 5.01
    assert intensity.add_restart() is True  # the first two left the window
    assert intensity.recent() == 1


def test_a_stamp_exactly_at_the_window_edge_still_counts() -> None:
    # OTP keeps stamps R with R >= Now - Period.
    clock = FakeClock()
    intensity = RestartIntensity(1, 5.0, clock=clock)
    assert intensity.add_restart() is True
    clock.now += 5.0
    assert intensity.add_restart() is False


def test_zero_restarts_means_the_first_restart_gives_up() -> None:
    intensity = RestartIntensity(0, 5.0, clock=FakeClock())
    assert intensity.add_restart() is False


def test_spread_out_restarts_never_exceed() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(1, 1.0, clock=clock)
    for _ in range(10):
        assert intensity.add_restart() is True
        clock.now += 1.5


@pytest.mark.parametrize(
    ("max_restarts", "max_seconds"),
    [(-1, 5.0), (1.5, 5.0), (True, 5.0), (3, 0), (3, -1.0), (3, float("inf"))],
)
def test_invalid_limits_are_rejected(max_restarts: object, max_seconds: object) -> None:
    with pytest.raises(InvalidChildSpecError):
        RestartIntensity(max_restarts, max_seconds)  # type: ignore[arg-type]
