"""Progress display, result tables and saved results."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dspex.clients.types import Usage
from dspex.evaluate import Evaluate
from dspex.evaluate.progress import (
    NullProgress,
    PlainProgress,
    RichProgress,
    make_progress,
    print_table,
)
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction


def devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(n)]


class HalfRight:
    """Right on even questions, wrong on odd ones, fails on q3."""

    async def acall(self, question: str) -> Prediction:
        i = int(question[1:])
        if i == 3:
            raise ValueError("no answer for q3")
        pred = Prediction(answer=f"a{i}" if i % 2 == 0 else "wrong")
        pred.usage = Usage(prompt_tokens=5, completion_tokens=1, calls=1, cost=0.001)
        return pred


def exact(example: Any, pred: Any) -> bool:
    return example.answer == pred.answer


# --- progress ----------------------------------------------------------------


def test_make_progress_picks_the_display() -> None:
    assert isinstance(make_progress(False), NullProgress)
    assert isinstance(make_progress(True, file=io.StringIO()), PlainProgress)
    bar = make_progress(True, file=io.StringIO(), force_terminal=True)
    assert isinstance(bar, RichProgress)


def test_rich_bar_shows_counts_average_errors_and_lm_usage() -> None:
    out = io.StringIO()
    bar = make_progress(True, file=out, force_terminal=True)
    bar.start(3)
    bar.advance(1.0, Usage(calls=2, cost=0.25), False)
    bar.advance(0.0, None, True)
    bar.advance(1.0, Usage(calls=1, cost=0.5), False)
    bar.close()
    text = out.getvalue()
    assert "3/3" in text
    assert "avg 66.67%" in text and "errors 1" in text
    assert "LM calls 3" in text and "$0.7500" in text


def test_plain_progress_prints_periodic_lines_and_a_summary() -> None:
    out = io.StringIO()
    progress = PlainProgress(out, interval=0.0)
    progress.start(None)
    progress.advance(1.0, None, False)
    progress.advance(0.0, None, False)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "Evaluating ? examples"
    assert lines[1].startswith("1/?  avg 100.00%")
    assert lines[-1].startswith("Evaluated 2/?  avg 50.00%  errors 0")


async def test_progress_and_table_in_a_non_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    long_question = "why " * 100
    data = [*devset(5), Example(question=long_question, answer="x").with_inputs("question")]

    class Program(HalfRight):
        async def acall(self, question: str) -> Prediction:
            if question == long_question:
                return Prediction(answer="x")
            return await super().acall(question)

    evaluator = Evaluate(
        devset=data, metric=exact, display_progress=True, display_table=True, max_errors=5
    )
    result = await evaluator.acall(Program())
    out, err = capsys.readouterr()

    assert result.n_errors == 1
    assert "Evaluated 6/6  avg 66.67%  errors 1  LM calls 4  $0.0040" in err
    for column in ("question", "gold_answer", "pred_answer", "score", "error"):
        assert column in out
    assert "ValueError: no answer for q3" in out
    assert long_question.strip() not in out and "…" in out


def test_table_of_the_first_rows_says_how_many_are_hidden() -> None:
    out = io.StringIO()
    rows = [{"question": f"q{i}", "score": 1.0} for i in range(5)]
    print_table(rows, limit=2, file=out)
    text = out.getvalue()
    assert "q0" in text and "q1" in text and "q2" not in text
    assert "3 more rows not displayed" in text


async def test_display_table_int_limits_rows(capsys: pytest.CaptureFixture[str]) -> None:
    await Evaluate(devset=devset(4), metric=exact, display_table=1).acall(HalfRight())
    out = capsys.readouterr().out
    assert "q0" in out and "q1" not in out


def test_rich_is_not_imported_unless_something_is_displayed() -> None:
    code = (
        "import sys\n"
        "from dspex.evaluate import Evaluate\n"
        "async def program(question): return {'answer': question}\n"
        "r = Evaluate(devset=[{'question': 'q'}], metric=lambda e, p: 1)(program)\n"
        "assert r.score == 100.0\n"
        "print('rich' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


# --- saved results -------------------------------------------------------------


async def test_save_as_json_writes_one_row_per_example(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    evaluator = Evaluate(devset=devset(4), metric=exact, save_as_json=path)
    await evaluator.acall(HalfRight())

    rows = json.loads(path.read_text())
    assert [row["question"] for row in rows] == ["q0", "q1", "q2", "q3"]
    assert rows[0] == {"question": "q0", "gold_answer": "a0", "pred_answer": "a0", "score": 1.0}
    assert rows[1]["score"] == 0.0 and rows[1]["pred_answer"] == "wrong"
    assert rows[3] == {
        "question": "q3",
        "gold_answer": "a3",
        "score": 0.0,
        "error": "ValueError: no answer for q3",
    }


async def test_save_as_csv_writes_the_union_of_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    data = [
        Example(question="q0", answer=["a0", "zero"]).with_inputs("question"),
        *devset(4)[1:],
    ]

    def metric(example: Any, pred: Any) -> bool:
        return pred.answer in example.answer

    await Evaluate(devset=data, metric=metric).acall(HalfRight(), save_as_csv=path)

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["question", "gold_answer", "pred_answer", "score", "error"]
    assert json.loads(rows[0]["gold_answer"]) == ["a0", "zero"]
    assert rows[0]["score"] == "1.0" and rows[0]["error"] == ""
    assert rows[3]["error"] == "ValueError: no answer for q3" and rows[3]["pred_answer"] == ""


async def test_evaluation_reports_itself_on_the_event_bus() -> None:
    from dspex.evaluate import Evaluate
    from dspex.observability.events import subscribe
    from dspex.primitives.example import Example
    from dspex.primitives.prediction import Prediction

    seen: list = []
    subscription = subscribe(seen.append, kinds=["eval.*"])

    class Echo:
        async def acall(self, **inputs: object) -> Prediction:
            return Prediction(answer="x")

    devset = [Example(question=str(i), answer="x").with_inputs("question") for i in range(5)]
    try:
        await Evaluate(devset=devset, metric=lambda e, p: 1.0).acall(Echo())
    finally:
        subscription.unsubscribe()
    kinds = [event.kind for event in seen]
    assert kinds[0] == "eval.started" and kinds[-1] == "eval.finished"
    finished = seen[-1].data
    assert finished["done"] == 5 and finished["total"] == 5 and finished["score"] == 100.0
