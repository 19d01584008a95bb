"""OTP supervision semantics (reference/otp_and_ray.md checklist) on the pure
state machine, with a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import pytest

from dspex.runtime.supervision import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
    ChildSpec,
    ExitReason,
    InvalidChildSpecError,
    Plan,
    SupervisorConfig,
    SupervisorState,
)
from dspex.runtime.supervision.state import AUTO_SHUTDOWN, REACHED_MAX_RESTART_INTENSITY

CRASH = ExitReason("crashed", "worker died")
NORMAL = ExitReason("normal")
SHUTDOWN = ExitReason("shutdown")
ESCALATED = ExitReason("shutdown", REACHED_MAX_RESTART_INTENSITY)


class Worker:
    pass


class FakeSupervisor:
    is_supervisor = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, restart: str = "permanent", **kw: object) -> ChildSpec:
    return ChildSpec(name, kw.pop("cls", Worker), restart=restart, **kw)  # type: ignore[arg-type]


def started(
    specs: list[ChildSpec], clock: FakeClock | None = None, **config: object
) -> SupervisorState:
    """A state whose children were all started (as the executor reports)."""
    state = SupervisorState(specs, SupervisorConfig(**config), clock=clock or FakeClock())  # type: ignore[arg-type]
    for name in state.names():
        state.mark_running(name, f"actor-{name}", "node-1")
    return state


def carry_out(state: SupervisorState, plan: Plan) -> None:
    """What the executor does with a plan when every start succeeds."""
    for name in plan.stop:
        state.mark_stopped(name)
    for name in plan.start:
        state.mark_running(name, f"actor-{name}-new", "node-1")


def states(state: SupervisorState) -> dict[str, str]:
    return {info.name: info.state for info in state.info()}


# 1. Start / 2. Stop ---------------------------------------------------------


def test_children_keep_start_order_and_dynamic_children_go_last() -> None:
    state = started([spec("a"), spec("b")])
    state.add(spec("c"))
    assert state.names() == ["a", "b", "c"]


def test_shutdown_stops_running_children_in_reverse_start_order() -> None:
    state = started([spec("a"), spec("b"), spec("c")])
    carry_out(state, state.terminate("b"))
    assert state.shutdown("x") == Plan(stop=("c", "a"), shutdown="x")


def test_duplicate_names_are_rejected() -> None:
    state = started([spec("a")])
    with pytest.raises(ChildAlreadyExistsError) as err:
        state.add(spec("a"))
    assert err.value.running is True


# 3. Strategies --------------------------------------------------------------


def test_one_for_one_restarts_only_the_failed_child() -> None:
    state = started([spec("a"), spec("b"), spec("c")])
    plan = state.child_exited("b", CRASH)
    assert plan == Plan(stop=(), start=("b",), origin="b")
    assert states(state) == {"a": "running", "b": "restarting", "c": "running"}
    carry_out(state, plan)
    assert states(state)["b"] == "running"
    assert {i.name: i.restarts for i in state.info()} == {"a": 0, "b": 1, "c": 0}


def test_one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order() -> None:
    state = started([spec("a"), spec("b"), spec("c"), spec("d")], strategy="one_for_all")
    plan = state.child_exited("b", CRASH)
    assert plan == Plan(stop=("d", "c", "a"), start=("a", "b", "c", "d"), origin="b")
    carry_out(state, plan)
    assert set(states(state).values()) == {"running"}


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it() -> None:
    state = started([spec("a"), spec("b"), spec("c"), spec("d")], strategy="rest_for_one")
    plan = state.child_exited("b", CRASH)
    assert plan == Plan(stop=("d", "c"), start=("b", "c", "d"), origin="b")
    assert states(state)["a"] == "running"


def test_rest_for_one_on_the_last_child_is_like_one_for_one() -> None:
    state = started([spec("a"), spec("b")], strategy="rest_for_one")
    assert state.child_exited("b", CRASH) == Plan(start=("b",), origin="b")


def test_one_for_all_also_starts_children_that_were_terminated() -> None:
    # OTP's start_children walks the whole child list.
    state = started([spec("a"), spec("b", "transient"), spec("c")], strategy="one_for_all")
    carry_out(state, state.child_exited("b", NORMAL))
    assert states(state)["b"] == "terminated"
    plan = state.child_exited("a", CRASH)
    assert plan == Plan(stop=("c",), start=("a", "b", "c"), origin="a")


# 4. Restart types -----------------------------------------------------------


@pytest.mark.parametrize("reason", [NORMAL, SHUTDOWN, CRASH, ExitReason("killed")])
def test_permanent_is_restarted_whatever_the_reason(reason: ExitReason) -> None:
    state = started([spec("a")])
    assert state.child_exited("a", reason).start == ("a",)


@pytest.mark.parametrize(
    "reason", [NORMAL, SHUTDOWN, ExitReason.parse("shutdown:draining")]
)
def test_transient_is_not_restarted_after_a_clean_exit(reason: ExitReason) -> None:
    state = started([spec("a", "transient")])
    assert state.child_exited("a", reason) == Plan()
    assert states(state) == {"a": "terminated"}  # the spec is kept


@pytest.mark.parametrize(
    "reason", [CRASH, ExitReason("killed"), ExitReason("node_lost"), ExitReason.parse("boom")]
)
def test_transient_is_restarted_after_a_crash(reason: ExitReason) -> None:
    state = started([spec("a", "transient")])
    assert state.child_exited("a", reason).start == ("a",)


@pytest.mark.parametrize("reason", [NORMAL, CRASH])
def test_temporary_is_never_restarted_and_is_removed(reason: ExitReason) -> None:
    state = started([spec("a"), spec("t", "temporary")])
    assert state.child_exited("t", reason) == Plan()
    assert state.names() == ["a"]


def test_temporary_sibling_stopped_by_one_for_all_is_removed_not_restarted() -> None:
    state = started([spec("a"), spec("t", "temporary"), spec("c")], strategy="one_for_all")
    plan = state.child_exited("c", CRASH)
    assert plan == Plan(stop=("t", "a"), start=("a", "c"), origin="c")
    carry_out(state, plan)
    assert state.names() == ["a", "c"]


def test_temporary_sibling_stopped_by_rest_for_one_is_removed() -> None:
    state = started([spec("a"), spec("t", "temporary"), spec("c")], strategy="rest_for_one")
    plan = state.child_exited("a", CRASH)
    assert plan == Plan(stop=("c", "t"), start=("a", "c"), origin="a")
    carry_out(state, plan)
    assert state.names() == ["a", "c"]


def test_exit_of_a_child_that_is_not_running_is_ignored() -> None:
    state = started([spec("a")])
    carry_out(state, state.terminate("a"))
    assert state.child_exited("a", CRASH) == Plan()
    assert state.child_exited("ghost", CRASH) == Plan()


# 5. Intensity ---------------------------------------------------------------


def test_exceeding_intensity_stops_all_children_and_shuts_down() -> None:
    clock = FakeClock()
    state = started([spec("a"), spec("b"), spec("c")], clock, max_restarts=2, max_seconds=5.0)
    for _ in range(2):
        carry_out(state, state.child_exited("b", CRASH))
        clock.now += 1
    plan = state.child_exited("b", CRASH)
    assert plan == Plan(stop=("c", "a"), shutdown=REACHED_MAX_RESTART_INTENSITY, origin="b")


def test_restarts_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    state = started([spec("a")], clock, max_restarts=1, max_seconds=5.0)
    carry_out(state, state.child_exited("a", CRASH))
    clock.now += 6
    assert state.child_exited("a", CRASH).shutdown is None


def test_intensity_is_counted_per_supervisor_not_per_child() -> None:
    state = started([spec("a"), spec("b")], max_restarts=1, max_seconds=5.0)
    carry_out(state, state.child_exited("a", CRASH))
    assert state.child_exited("b", CRASH).shutdown == REACHED_MAX_RESTART_INTENSITY


def test_a_one_for_all_restart_counts_once() -> None:
    state = started([spec("a"), spec("b"), spec("c")], strategy="one_for_all", max_restarts=1)
    plan = state.child_exited("a", CRASH)
    assert plan.shutdown is None and len(plan.start) == 3
    assert state.intensity.recent() == 1


def test_clean_exits_that_are_not_restarted_do_not_count() -> None:
    state = started([spec("a", "transient"), spec("t", "temporary")], max_restarts=0)
    assert state.child_exited("a", NORMAL) == Plan()
    assert state.child_exited("t", CRASH) == Plan()
    assert state.intensity.recent() == 0


def test_default_intensity_is_three_in_five_seconds() -> None:
    config = SupervisorConfig()
    assert (config.max_restarts, config.max_seconds) == (3, 5.0)


# 6. Failed restart ----------------------------------------------------------


def test_failed_restart_shows_restarting_and_the_retry_counts() -> None:
    clock = FakeClock()
    state = started([spec("a"), spec("b")], clock, max_restarts=2)
    plan = state.child_exited("a", CRASH)
    retry = state.start_failed("a", plan.origin)
    assert retry == Plan(start=("a",), origin="a")
    assert states(state)["a"] == "restarting"
    assert state.intensity.recent() == 2
    assert state.start_failed("a", retry.origin).shutdown == REACHED_MAX_RESTART_INTENSITY


def test_failed_one_for_all_restart_retries_the_whole_group() -> None:
    state = started([spec("a"), spec("b"), spec("c")], strategy="one_for_all")
    plan = state.child_exited("a", CRASH)
    for name in plan.stop:
        state.mark_stopped(name)
    state.mark_running("a", "a2", "n")  # a restarted, then b failed to start
    retry = state.start_failed("b", plan.origin)
    assert retry == Plan(stop=("a",), start=("a", "b", "c"), origin="a")


def test_failed_rest_for_one_restart_retries_from_the_original_child() -> None:
    state = started([spec("a"), spec("b"), spec("c")], strategy="rest_for_one")
    plan = state.child_exited("b", CRASH)
    for name in plan.stop:
        state.mark_stopped(name)
    state.mark_running("b", "b2", "n")
    retry = state.start_failed("c", plan.origin)
    assert retry == Plan(stop=("b",), start=("b", "c"), origin="b")


def test_manual_restart_is_not_counted() -> None:
    state = started([spec("a")], max_restarts=0)
    carry_out(state, state.terminate("a"))
    assert state.manual_restart("a") == Plan(start=("a",))
    assert state.intensity.recent() == 0


def test_terminating_a_restarting_child_cancels_its_retry() -> None:
    state = started([spec("a")])
    state.child_exited("a", CRASH)
    state.start_failed("a", "a")
    assert state.terminate("a") == Plan()
    assert states(state) == {"a": "terminated"}


# 7. Shutdown ----------------------------------------------------------------


def test_shutdown_defaults_are_five_seconds_for_workers_and_infinity_for_supervisors() -> None:
    assert spec("w").shutdown == 5.0
    assert spec("s", cls=FakeSupervisor).shutdown == "infinity"
    assert spec("s", cls=FakeSupervisor).start_timeout == 30.0


@pytest.mark.parametrize("value", ["brutal_kill", "infinity", 0, 2.5])
def test_valid_shutdown_values(value: object) -> None:
    assert spec("w", shutdown=value).shutdown == value


@pytest.mark.parametrize("value", [-1, "soon", True, "5"])
def test_invalid_shutdown_values_are_rejected(value: object) -> None:
    with pytest.raises(InvalidChildSpecError):
        spec("w", shutdown=value)


# 8. Escalation: a supervisor exiting `shutdown` is a child exit -------------


def test_permanent_child_supervisor_that_gave_up_is_restarted() -> None:
    state = started([spec("sub", cls=FakeSupervisor)])
    assert state.child_exited("sub", ESCALATED).start == ("sub",)


def test_transient_child_supervisor_that_gave_up_is_not_restarted() -> None:
    state = started([spec("sub", "transient", cls=FakeSupervisor)])
    assert state.child_exited("sub", ESCALATED) == Plan()


def test_escalation_counts_toward_the_parents_intensity() -> None:
    state = started([spec("sub", cls=FakeSupervisor)], max_restarts=1)
    carry_out(state, state.child_exited("sub", ESCALATED))
    assert state.child_exited("sub", ESCALATED).shutdown == REACHED_MAX_RESTART_INTENSITY


# 9. auto_shutdown -----------------------------------------------------------


def test_significant_children_cannot_be_permanent() -> None:
    with pytest.raises(InvalidChildSpecError):
        spec("s", significant=True)


def test_any_significant_shuts_down_when_a_significant_child_ends() -> None:
    state = started(
        [spec("a"), spec("s", "transient", significant=True)], auto_shutdown="any_significant"
    )
    assert state.child_exited("s", NORMAL) == Plan(stop=("a",), shutdown=AUTO_SHUTDOWN)


def test_all_significant_waits_for_the_last_significant_child() -> None:
    state = started(
        [spec("a"), spec("s1", "transient", significant=True), spec("s2", "temporary", significant=True)],
        auto_shutdown="all_significant",
    )
    assert state.child_exited("s1", NORMAL) == Plan()
    assert state.child_exited("s2", CRASH) == Plan(stop=("a",), shutdown=AUTO_SHUTDOWN)


def test_auto_shutdown_never_ignores_significant_children() -> None:
    state = started([spec("a"), spec("s", "transient", significant=True)])
    assert state.child_exited("s", NORMAL) == Plan()


def test_a_restarted_significant_child_does_not_shut_down() -> None:
    state = started([spec("s", "transient", significant=True)], auto_shutdown="any_significant")
    assert state.child_exited("s", CRASH).start == ("s",)


# Dynamic children -----------------------------------------------------------


def test_delete_and_restart_need_a_terminated_child() -> None:
    state = started([spec("a")])
    with pytest.raises(ChildRunningError):
        state.delete("a")
    with pytest.raises(ChildRunningError):
        state.manual_restart("a")
    carry_out(state, state.terminate("a"))
    state.delete("a")
    assert state.names() == []
    with pytest.raises(ChildNotFoundError):
        state.terminate("a")


def test_terminating_a_temporary_child_removes_it() -> None:
    state = started([spec("t", "temporary")])
    carry_out(state, state.terminate("t"))
    assert state.names() == []


def test_counts_and_info() -> None:
    state = started([spec("a"), spec("sub", cls=FakeSupervisor)])
    carry_out(state, state.terminate("a"))
    counts = state.counts()
    assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (2, 1, 1, 1)
    info = {i.name: i for i in state.info()}
    assert info["a"].actor_id is None and info["sub"].actor_id == "actor-sub"
    assert info["sub"].is_supervisor and not info["a"].is_supervisor


@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "simple_one_for_one"},
        {"auto_shutdown": "sometimes"},
        {"max_restarts": -1},
        {"ping_interval": 0},
        {"ping_timeout": float("nan")},
    ],
)
def test_invalid_config_is_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(InvalidChildSpecError):
        SupervisorConfig(**settings)  # type: ignore[arg-type]
