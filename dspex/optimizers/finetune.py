"""`BootstrapFinetune`: teach a model the program's steps by fine-tuning it on the
program's own successful runs (DSPy's ``dspy.BootstrapFinetune``).

``compile(student, trainset=..., teacher=None)``:

1. runs the teacher (the student itself when none is given) on every training example,
   concurrently, with traces, and keeps the runs the metric passes (all runs without a
   metric);
2. turns each kept predictor call into a chat-format training example: the messages the
   adapter sends for that call (without the predictor's demos when
   ``exclude_demos=True``), then the assistant's answer;
3. fine-tunes the predictors' LM through its provider (``LM.finetune``; one job for all
   predictors with ``multitask=True``, else one per predictor), with ``train_kwargs``;
4. returns the student with each predictor's LM pointing at its fine-tuned model.

The bootstrapped data and each finished job are durable steps of the run: a resumed
compile does not train again. A provider that cannot fine-tune fails at once, before the
bootstrap runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from dspex.adapters.chat import ChatAdapter
from dspex.errors import BudgetExceededError, ConfigurationError, FinetuneNotSupportedError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.run import Run
from dspex.primitives.settings import settings

log = logging.getLogger("dspex.optimizers")


class BootstrapFinetune(Teleprompter):
    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        multitask: bool = True,
        train_kwargs: dict[str, Any] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = None,
    ) -> None:
        self.metric = metric
        self.multitask = multitask
        self.train_kwargs = dict(train_kwargs or {})
        self.adapter = adapter
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads

    async def _compile(
        self, run: Run, student: Any, *, trainset: Sequence[Any], valset: Sequence[Any] | None = None,
        teacher: Any = None, **kwargs: Any,
    ) -> Any:
        del valset, kwargs
        program = student.deepcopy()
        names = [name for name, _ in program.named_predictors()]
        if not names:
            raise ConfigurationError("BootstrapFinetune found no predictors in the program: nothing to fine-tune")
        lms = {name: _lm_of(predictor) for name, predictor in program.named_predictors()}
        for name, lm in lms.items():
            if getattr(lm, "provider", None) != "openai" or not callable(getattr(lm, "finetune", None)):
                raise FinetuneNotSupportedError(
                    f"predictor {name!r} uses {getattr(lm, 'model', lm)!r}, which cannot be fine-tuned here: "
                    "BootstrapFinetune needs an OpenAI-compatible dspex.LM ('openai/<model>')"
                )
        teacher_program = (teacher or student).deepcopy()
        data = await run.step("finetune/bootstrap", lambda: self._bootstrap(teacher_program, list(trainset)))
        counts = {name: len(rows) for name, rows in data.items()}
        log.info("BootstrapFinetune: training examples per predictor: %s", counts)
        if not any(counts.values()):
            raise ConfigurationError(
                "BootstrapFinetune kept no run of the teacher (the metric passed none): nothing to train on"
            )
        groups = _groups(names, lms, self.multitask)
        for number, (group, members) in enumerate(groups.items()):
            rows = [row for name in members for row in data.get(name, [])]
            if not rows:
                continue
            lm = lms[members[0]]
            model = await run.step(f"finetune/job/{group}", lambda lm=lm, rows=rows: self._train(lm, rows))
            tuned = lm.copy(model=f"openai/{model}")
            for name in members:
                dict(program.named_predictors())[name].lm = tuned
            run.record_trial(number, {"predictors": members, "model": model}, score=None, kind="finetune")
        return program

    async def _bootstrap(self, teacher: Any, trainset: list[Any]) -> dict[str, list[dict[str, Any]]]:
        adapter = self.adapter or settings.adapter or ChatAdapter()
        names = {id(p): name for name, p in teacher.named_predictors()}
        limit = asyncio.Semaphore(self.num_threads or int(settings.num_threads))

        async def one(example: Any) -> list[tuple[str, dict[str, Any]]]:
            async with limit:
                with settings.context(trace=[]):
                    try:
                        prediction = await teacher.acall(**example.inputs())
                    except BudgetExceededError:
                        raise
                    except Exception as exc:  # a failed run is not training data
                        log.debug("BootstrapFinetune: the teacher failed on an example: %s", exc)
                        return []
                    trace = list(settings.trace)
            if self.metric is not None and not self.metric(example, prediction, trace):
                return []
            rows = []
            for predictor, inputs, outputs in trace:
                name = names.get(id(predictor))
                if name is None:
                    continue
                demos = [] if self.exclude_demos else list(predictor.demos)
                values = {k: outputs.get(k) for k in predictor.signature.output_fields}
                rows.append((name, adapter.format_finetune_data(predictor.signature, demos, inputs, values)))
            return rows

        found = await asyncio.gather(*(one(example) for example in trainset))
        data: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
        for rows in found:
            for name, row in rows:
                data[name].append(row)
        return data

    async def _train(self, lm: Any, rows: list[dict[str, Any]]) -> str:
        job = lm.finetune(rows, train_kwargs=self.train_kwargs)
        tuned = await asyncio.wrap_future(job)
        return str(tuned.model_name)


def _lm_of(predictor: Any) -> Any:
    lm = getattr(predictor, "lm", None) or settings.lm
    if lm is None:
        raise ConfigurationError("BootstrapFinetune needs an LM: dspex.configure(lm=...) or predictor.lm")
    return lm


def _groups(names: list[str], lms: dict[str, Any], multitask: bool) -> dict[str, list[str]]:
    """Which predictors share a fine-tuning job: all those with the same LM when
    ``multitask``, else each its own."""
    if not multitask:
        return {name: [name] for name in names}
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(f"lm{_index_of(lms, name)}", []).append(name)
    return groups


def _index_of(lms: dict[str, Any], name: str) -> int:
    distinct: list[Any] = []
    for lm in lms.values():
        if all(lm is not seen for seen in distinct):
            distinct.append(lm)
    return next(i for i, lm in enumerate(distinct) if lm is lms[name])


__all__ = ["BootstrapFinetune"]
