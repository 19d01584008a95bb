"""The functional core runs end to end with Ray made unimportable.

A subprocess installs a meta-path finder that refuses ``ray`` (and any
``ray.*``), then runs the in-process path against the simulated LM over HTTP on
127.0.0.1: Predict, ChainOfThought, Evaluate, BootstrapFewShot, MIPROv2
(``auto="light"`` on a small trainset), save and load. Asking for the runtime's
parts without the runtime gives a clear ConfigurationError, not an ImportError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dspex

SUBPROCESS_TIMEOUT = 600

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys


    class RefuseRay(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"ray is blocked in this test (import of {name!r})")
            return None


    sys.meta_path.insert(0, RefuseRay())

    import dspex
    from dspex.simlm import datasets, start_sim_lm

    server = start_sim_lm(seed=0)
    report = {}
    try:
        lm = dspex.LM("openai/sim", api_base=server.url, api_key="sk-local-test", cache=False)
        dspex.configure(lm=lm)

        def examples(split, n):
            rows = datasets.load("arithmetic", split)[:n]
            return [
                dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question")
                for r in rows
            ]

        train, dev = examples("train", 24), examples("dev", 12)

        def exact(example, prediction, trace=None):
            return str(example.answer).strip() == str(prediction.answer).strip()

        predict = dspex.Predict("question -> answer")
        report["predict"] = predict(question=dev[0].question).answer
        cot = dspex.ChainOfThought("question -> answer")
        cot_prediction = cot(question=dev[0].question)
        report["cot"] = [cot_prediction.reasoning, cot_prediction.answer]

        evaluate = dspex.Evaluate(devset=dev, metric=exact, num_threads=8)
        report["evaluate"] = evaluate(predict).score

        bootstrapped = dspex.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2).compile(
            dspex.Predict("question -> answer"), trainset=train
        )
        report["bootstrap_demos"] = len(bootstrapped.predictors()[0].demos)

        mipro = dspex.MIPROv2(metric=exact, auto="light", num_threads=8)
        compiled = mipro.compile(dspex.Predict("question -> answer"), trainset=train)
        report["mipro_status"] = compiled.run_info.status
        report["mipro_score"] = compiled.run_info.best_score

        state_path = sys.argv[1] + "/program.json"
        compiled.save(state_path)
        reloaded = dspex.Predict("question -> answer")
        reloaded.load(state_path)
        report["reloaded_same_state"] = reloaded.dump_state() == compiled.dump_state()
        program_dir = sys.argv[1] + "/whole"
        compiled.save(program_dir, save_program=True)
        whole = dspex.load(program_dir, allow_pickle=True)
        report["whole_answer"] = whole(question=dev[0].question, lm=lm).answer

        errors = {}
        try:
            dspex.Evaluate(devset=dev, metric=exact, runner="ray")(predict)
        except Exception as exc:
            errors["runner_ray"] = [type(exc).__name__, str(exc)]
        try:
            dspex.LabeledFewShot(k=2).compile(
                dspex.Predict("question -> answer"), trainset=train, coordinator=True
            )
        except Exception as exc:
            errors["coordinator"] = [type(exc).__name__, str(exc)]
        report["errors"] = errors
        report["ray_loaded"] = any(n == "ray" or n.startswith("ray.") for n in sys.modules)
    finally:
        server.stop()
    print("REPORT " + json.dumps(report))
    """
)


@pytest.mark.slow
def test_the_in_process_path_runs_with_ray_unimportable(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(dspex.__file__).resolve().parents[1]),
        "DSPEX_RUNS_DB": str(tmp_path / "runs.sqlite"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"the script failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))

    assert report["predict"] and all(report["cot"])
    assert 0.0 <= report["evaluate"] <= 100.0
    assert report["bootstrap_demos"] >= 1
    assert report["mipro_status"] == "finished" and report["mipro_score"] is not None
    assert report["reloaded_same_state"] and report["whole_answer"]
    assert not report["ray_loaded"]
    # Without the runtime, its parts are refused with what to do, not with an ImportError.
    kind, message = report["errors"]["runner_ray"]
    assert kind == "ConfigurationError" and "dspex.init()" in message
    kind, message = report["errors"]["coordinator"]
    assert kind == "ConfigurationError" and "dspex.init()" in message
