"""`dspex runs ...` against a temporary SQLite run store filled through RunStore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspex.cli import app
from dspex.optimizers.run_store import RunStore


@pytest.fixture
def store(cli_env: Path) -> RunStore:
    """A store with three runs: finished (oldest), failed (with trials and usage), running."""
    store = RunStore(cli_env / "runs.sqlite3")
    store.create_run("run-done", "BootstrapFewShot", {"max_demos": 4})
    store.update_run("run-done", status="finished", best_score=0.9)
    store.create_run("run-failed", "MIPROv2", {"num_trials": 3})
    store.record_trial("run-failed", 0, {"instruction": 1}, score=0.5, status="ok")
    store.record_trial(
        "run-failed",
        1,
        {"instruction": 2},
        score=None,
        status="failed",
        error="LMError: 503 from provider",
    )
    store.add_usage(
        "run-failed",
        "openai/gpt-4o-mini",
        calls=10,
        prompt_tokens=1000,
        completion_tokens=200,
        cost=0.0125,
    )
    store.add_usage(
        "run-failed",
        "anthropic/claude",
        calls=2,
        prompt_tokens=50,
        completion_tokens=10,
        cost=0.0025,
    )
    store.update_run("run-failed", status="failed", best_score=0.5, error="worker lost")
    store.create_run("run-live", "MIPROv2", {})
    return store


def _invoke(runner: CliRunner, store: RunStore, *args: str) -> object:
    return runner.invoke(app, ["runs", *args, "--db", str(store.path)])


def test_list_json_is_newest_first_with_trial_counts(runner: CliRunner, store: RunStore) -> None:
    result = _invoke(runner, store, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["run_id"] for row in rows] == ["run-live", "run-failed", "run-done"]
    assert {row["run_id"]: row["trials"] for row in rows} == {
        "run-live": 0,
        "run-failed": 2,
        "run-done": 0,
    }
    assert rows[1]["status"] == "failed" and rows[1]["best_score"] == 0.5


def test_list_limit_and_table(runner: CliRunner, store: RunStore) -> None:
    limited = json.loads(_invoke(runner, store, "list", "--json", "--limit", "1").stdout)
    assert [row["run_id"] for row in limited] == ["run-live"]
    table = _invoke(runner, store, "list")
    assert table.exit_code == 0
    assert "run-failed" in table.stdout and "MIPROv2" in table.stdout


def test_list_of_a_missing_store_is_empty_and_creates_nothing(
    runner: CliRunner, cli_env: Path
) -> None:
    missing = cli_env / "nowhere" / "runs.sqlite3"
    result = runner.invoke(app, ["runs", "list", "--db", str(missing)])
    assert result.exit_code == 0
    assert "no runs" in result.stdout
    assert not missing.exists()
    assert (
        json.loads(runner.invoke(app, ["runs", "list", "--json", "--db", str(missing)]).stdout)
        == []
    )


def test_db_defaults_to_dspex_runs_db(
    runner: CliRunner, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_RUNS_DB", str(store.path))
    rows = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    assert len(rows) == 3


def test_show_json_has_trials_errors_usage_and_cost(runner: CliRunner, store: RunStore) -> None:
    result = _invoke(runner, store, "show", "run-failed", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run"]["error"] == "worker lost"
    assert [(t["number"], t["status"], t["score"]) for t in report["trials"]] == [
        (0, "ok", 0.5),
        (1, "failed", None),
    ]
    assert report["trials"][1]["error"] == "LMError: 503 from provider"
    assert report["usage"]["openai/gpt-4o-mini"]["calls"] == 10
    assert report["total_cost"] == pytest.approx(0.015)


def test_show_table_mentions_the_failure(runner: CliRunner, store: RunStore) -> None:
    result = _invoke(runner, store, "show", "run-failed")
    assert result.exit_code == 0, result.output
    for text in ("worker lost", "LMError: 503", "openai/gpt-4o-mini", "0.0150"):
        assert text in result.stdout


def test_show_unknown_run_says_how_to_find_runs(runner: CliRunner, store: RunStore) -> None:
    result = _invoke(runner, store, "show", "nope")
    assert result.exit_code == 6
    assert "dspex runs list" in result.stderr


@pytest.mark.parametrize(
    ("run_id", "code"), [("run-failed", 0), ("run-live", 0), ("run-done", 1), ("nope", 6)]
)
def test_resume_exit_codes(runner: CliRunner, store: RunStore, run_id: str, code: int) -> None:
    result = _invoke(runner, store, "resume", run_id)
    assert result.exit_code == code, result.output
    if code == 0:
        assert f'run_id="{run_id}"' in result.stdout


def test_budget_limited_and_cancelled_runs(runner: CliRunner, store: RunStore) -> None:
    store.update_run("run-live", status="budget_limited")
    assert _invoke(runner, store, "resume", "run-live").exit_code == 0
    store.update_run("run-live", status="cancelled")
    assert _invoke(runner, store, "resume", "run-live").exit_code == 1


def test_cancel_marks_the_run_and_is_idempotent(runner: CliRunner, store: RunStore) -> None:
    first = _invoke(runner, store, "cancel", "run-live")
    assert first.exit_code == 0, first.output
    assert store.get_run("run-live").status == "cancelled"
    again = _invoke(runner, store, "cancel", "run-live")
    assert again.exit_code == 0
    assert "already" in again.stdout


def test_cancel_refuses_finished_and_unknown_runs(runner: CliRunner, store: RunStore) -> None:
    finished = _invoke(runner, store, "cancel", "run-done")
    assert finished.exit_code == 1
    assert store.get_run("run-done").status == "finished"
    assert _invoke(runner, store, "cancel", "nope").exit_code == 6


def test_every_runs_command_documents_exit_codes(runner: CliRunner) -> None:
    for command in ("list", "show", "resume", "cancel"):
        result = runner.invoke(app, ["runs", command, "--help"])
        assert result.exit_code == 0
        assert "Exit codes:" in result.stdout and "Examples" in result.stdout


def test_resume_of_an_in_process_run_prints_how_to_resume_it(store: RunStore) -> None:
    result = CliRunner().invoke(app, ["runs", "resume", "run-failed", "--db", str(store.path)])
    assert result.exit_code == 0, result.output
    assert 'run_id="run-failed"' in result.output


def test_resume_of_a_coordinator_run_finishes_it_and_saves_the_program(
    store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cluster side (coordinator restart and replay) is tested on real Ray in
    # tests/optimizers/test_coordinator_ray.py; here: the command's own wiring.
    import dspex
    import dspex.runtime
    from dspex.runtime import runs as runs_api
    from dspex.runtime.coordinator import JOB_KEY

    store.put_step("run-failed", JOB_KEY, b"stored job")
    calls: list[str] = []
    monkeypatch.setattr(dspex.runtime, "init", lambda address=None: calls.append(f"init {address}"))
    monkeypatch.setattr(dspex.runtime, "shutdown", lambda: calls.append("shutdown"))

    def finished(run_id: str, *, store: RunStore) -> dspex.Predict:
        calls.append(f"resume {run_id}")
        program = dspex.Predict("question -> answer")
        program.demos = [dspex.Example(question="q", answer="a")]
        return program

    monkeypatch.setattr(runs_api, "resume", finished)
    output = tmp_path / "resumed.json"
    result = CliRunner().invoke(
        app,
        ["runs", "resume", "run-failed", "--db", str(store.path), "--address", "10.0.0.1:6379",
         "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    assert calls == ["init 10.0.0.1:6379", "resume run-failed", "shutdown"]
    assert json.loads(output.read_text())["demos"] == [{"question": "q", "answer": "a"}]


# --- run id prefixes ---------------------------------------------------------------------


def test_show_resume_and_cancel_accept_a_unique_prefix(runner: CliRunner, store: RunStore) -> None:
    shown = _invoke(runner, store, "show", "run-d", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["run"]["run_id"] == "run-done"
    resumed = _invoke(runner, store, "resume", "run-f")
    assert resumed.exit_code == 0, resumed.output
    assert 'run_id="run-failed"' in resumed.stdout  # the full id, not the prefix
    cancelled = _invoke(runner, store, "cancel", "run-l")
    assert cancelled.exit_code == 0, cancelled.output
    assert store.get_run("run-live").status == "cancelled"


@pytest.mark.parametrize("command", ["show", "resume", "cancel"])
def test_an_ambiguous_prefix_is_a_usage_error_listing_the_matches(
    runner: CliRunner, store: RunStore, command: str
) -> None:
    result = _invoke(runner, store, command, "run-")
    assert result.exit_code == 2, result.output
    for run_id in ("run-done", "run-failed", "run-live"):
        assert run_id in result.stderr
    assert store.get_run("run-live").status == "running"  # nothing was done to any of them


def test_prefix_characters_are_literal_and_an_unmatched_prefix_is_not_found(
    runner: CliRunner, store: RunStore
) -> None:
    store.create_run("mipro_x", "MIPROv2", {})
    assert _invoke(runner, store, "show", "run%").exit_code == 6
    assert _invoke(runner, store, "show", "run_").exit_code == 6  # '_' is no wildcard
    assert _invoke(runner, store, "show", "mipro_").exit_code == 0


def test_every_command_taking_a_run_id_documents_the_ambiguous_prefix(runner: CliRunner) -> None:
    for command in ("show", "resume", "cancel"):
        result = runner.invoke(app, ["runs", command, "--help"])
        assert "several runs" in " ".join(result.stdout.split())


# --- whole run ids at any terminal width ----------------------------------------------------

LONG_IDS = ("bootstrapfewshotwithrandomsearch-0123456789", "miprov2-" + "f" * 30)


@pytest.mark.parametrize("columns", ["80", "40"])
def test_list_prints_every_run_id_whole_at_any_width(
    runner: CliRunner, cli_env: Path, monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    store = RunStore(cli_env / "long.sqlite3")
    store.create_run(LONG_IDS[0], "BootstrapFewShotWithRandomSearch", {})
    store.create_run(LONG_IDS[1], "MIPROv2", {})
    store.update_run(LONG_IDS[1], status="budget_limited", best_score=0.8125)
    monkeypatch.setenv("COLUMNS", columns)
    result = runner.invoke(app, ["runs", "list", "--db", str(store.path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for run_id in LONG_IDS:
        assert any(line.split()[0] == run_id for line in lines), result.stdout
    assert "budget_limited" in result.stdout and "0.8125" in result.stdout


# --- the run's program ------------------------------------------------------------------------


def test_a_finished_run_stores_its_program_without_the_api_key_and_show_saves_it(
    runner: CliRunner, cli_env: Path
) -> None:
    import dspex
    from dspex.optimizers import LabeledFewShot

    secret = "sk-must-never-be-stored-0451"
    store = RunStore(cli_env / "runs.sqlite3")
    student = dspex.Predict("question -> answer: int")
    student.lm = dspex.LM("openai/sim-1", api_base="http://127.0.0.1:9", api_key=secret)
    trainset = [
        dspex.Example(question=f"What is {i} + 1?", answer=i + 1).with_inputs("question")
        for i in range(6)
    ]
    compiled = LabeledFewShot(k=3).compile(
        student, trainset=trainset, store=store, coordinator=False
    )
    run_id = compiled.run_info.run_id

    target = cli_env / "program.json"
    result = runner.invoke(
        app, ["runs", "show", run_id[:-3], "--save", str(target), "--db", str(store.path)]
    )
    assert result.exit_code == 0, result.output
    assert "program: stored" in result.stdout
    fresh = dspex.Predict("question -> answer: int")
    fresh.load(target)
    assert fresh.demos == [demo.toDict() for demo in compiled.demos]  # dicts, as DSPy loads them
    assert len(fresh.demos) == 3
    for path in store.path.parent.glob("runs.sqlite3*"):  # the database and its WAL
        assert secret.encode() not in path.read_bytes()
    assert secret not in target.read_text()


def test_saving_a_run_without_a_program_fails_and_writes_nothing(
    runner: CliRunner, store: RunStore, cli_env: Path
) -> None:
    target = cli_env / "program.json"
    result = _invoke(runner, store, "show", "run-failed", "--save", str(target))
    assert result.exit_code == 1
    assert "stored no program" in result.stderr
    assert not target.exists()
    assert (
        json.loads(_invoke(runner, store, "show", "run-failed", "--json").stdout)["program_stored"]
        is False
    )
