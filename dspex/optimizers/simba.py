"""SIMBA: stochastic introspective mini-batch ascent, with DSPy's ``dspy.SIMBA`` API.

``SIMBA(metric=..., bsize=32, num_candidates=6, max_steps=8, max_demos=4)`` and
``compile(student, trainset=..., seed=0)``. Each of ``max_steps`` steps:

1. takes the next mini-batch of ``bsize`` training examples (the trainset reshuffled each
   epoch);
2. runs every example ``num_candidates`` times, each run with a program drawn from the
   best ones so far (a softmax over their mean scores at ``temperature_for_sampling``)
   and an LM copy of its own (its own ``rollout_id``, temperature 1.0), keeping traces;
3. ranks the examples by how much their runs disagree (best minus worst, then best,
   then best minus mean): where some runs succeed and others fail there is something
   to learn;
4. for the top examples builds up to ``num_candidates + 1`` new programs: a source
   program drawn at ``temperature_for_candidates`` loses a few demos when it has many,
   then either gains the best run's calls as demos, or gains a *rule* per predictor,
   written by the prompt model from the contrast between the best and the worst run
   (`ContrastTrajectories`);
5. scores the new programs on the same mini-batch; the best joins the winners.

Finally ``num_candidates + 1`` winners, spread from first to last, are scored on the
whole trainset and the best is returned, carrying ``candidate_programs`` and
``trial_logs``.

How it runs here: the ``bsize * num_candidates`` sampled runs and the candidates'
mini-batch runs go out concurrently (``num_threads`` at once; DSPy uses a thread pool
of the same size), the final scoring fans out to EvalWorkers with the runtime up, and
every step is a durable step of the run whose random draws come from ``seed`` and the
step number, so a resumed run replays the finished steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.errors import BudgetExceededError, ConfigurationError
from dspex.modules.best_of_n import ATTEMPT_TEMPERATURE
from dspex.modules.predict import Predict
from dspex.modules.refine import describe_predictors, program_code
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.run import Run
from dspex.optimizers.scoring import ReadOnlyList, ReadOnlyMapping
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature

log = logging.getLogger("dspex.optimizers")


class ContrastTrajectories(Signature):
    """Two runs of the same language-model program on the same input got different
    rewards. Compare them step by step and find where the worse run went wrong. Then give
    each of the program's modules one rule for the future, concrete enough to act on and
    general enough to apply to similar inputs: "when the input looks like ..., do ...".
    A module sees only its rule, not these runs. Name every module in module_names once."""

    program_code: str = InputField(desc="the program's code, where available")
    modules_defn: str = InputField(desc="each module: its inputs, outputs and instructions")
    program_inputs: str = InputField(desc="the input both runs got, as JSON")
    oracle_metadata: str = InputField(desc="what is known about the right answer, as JSON")
    worse_program_trajectory: str = InputField(desc="each module call of the worse run, as JSON")
    worse_program_outputs: str = InputField(desc="what the worse run returned, as JSON")
    worse_reward_value: float = InputField(desc="the worse run's reward")
    worse_reward_info: str = InputField(desc="what the metric said about the worse run, as JSON")
    better_program_trajectory: str = InputField(desc="each module call of the better run, as JSON")
    better_program_outputs: str = InputField(desc="what the better run returned, as JSON")
    better_reward_value: float = InputField(desc="the better run's reward")
    better_reward_info: str = InputField(desc="what the metric said about the better run, as JSON")
    module_names: list[str] = InputField(desc="the modules to give a rule to")
    discussion: str = OutputField(desc="where each module went wrong in the worse run, if it did")
    module_advice: dict[str, str] = OutputField(desc="module name -> its rule")


@dataclass
class _Sample:
    """One run of a program on an example."""

    example_index: int
    program: int
    score: float
    prediction: Any
    trace: list[Any]
    info: dict[str, Any]


class SIMBA(Teleprompter):
    def __init__(
        self,
        *,
        metric: Callable[..., Any],
        bsize: int = 32,
        num_candidates: int = 6,
        max_steps: int = 8,
        max_demos: int = 4,
        prompt_model: Any = None,
        teacher_settings: dict[str, Any] | None = None,
        demo_input_field_maxlen: int = 100_000,
        num_threads: int | None = None,
        temperature_for_sampling: float = 0.2,
        temperature_for_candidates: float = 0.2,
    ) -> None:
        for name, value, least in (("bsize", bsize, 1), ("num_candidates", num_candidates, 1),
                                   ("max_steps", max_steps, 0), ("max_demos", max_demos, 0)):
            if not isinstance(value, int) or value < least:
                raise ConfigurationError(f"SIMBA({name}={value!r}): an int >= {least}")
        if temperature_for_sampling <= 0 or temperature_for_candidates <= 0:
            raise ConfigurationError("SIMBA's temperatures must be > 0")
        self.metric = metric
        self.bsize = bsize
        self.num_candidates = num_candidates
        self.max_steps = max_steps
        self.max_demos = max_demos
        self.prompt_model = prompt_model
        self.teacher_settings = teacher_settings
        self.demo_input_field_maxlen = demo_input_field_maxlen
        self.num_threads = num_threads
        self.temperature_for_sampling = temperature_for_sampling
        self.temperature_for_candidates = temperature_for_candidates
        self.strategies = ["append_a_demo", "append_a_rule"] if max_demos > 0 else ["append_a_rule"]

    async def _compile(
        self, run: Run, student: Any, *, trainset: Sequence[Any], valset: Sequence[Any] | None = None,
        seed: int = 0, **kwargs: Any,
    ) -> Any:
        del valset, kwargs
        trainset = list(trainset)
        if len(trainset) < self.bsize:
            raise ConfigurationError(
                f"SIMBA needs at least bsize={self.bsize} training examples, got {len(trainset)}: "
                "pass more examples or a smaller bsize="
            )
        search = _Search(self, run, student.deepcopy(), trainset, seed)
        return await search.run()


class _Search:
    def __init__(self, owner: SIMBA, run: Run, student: Any, trainset: list[Any], seed: int) -> None:
        self.owner = owner
        self.run_ = run
        self.base = student
        self.trainset = trainset
        self.seed = seed
        self.names = [name for name, _ in student.named_predictors()]
        # Each program is its predictors' state: {name: {"instructions": str, "demos": [dict]}}.
        self.programs: list[dict[str, dict[str, Any]]] = [self._state_of(student)]
        self.scores: dict[int, list[float]] = {0: []}
        self.winners: list[int] = [0]
        self.trial_logs: dict[int, dict[str, Any]] = {}
        self.limit = asyncio.Semaphore(owner.num_threads or int(settings.num_threads))

    async def run(self) -> Any:
        for step in range(self.owner.max_steps):
            record = await self.run_.step(f"simba/step/{step}", lambda s=step: self._step(s))
            self._apply(step, record)
        return await self._finish()

    # --- one step (a durable step: returns a plain record) ------------------------------

    async def _step(self, step: int) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:simba:{step}")
        batch = self._batch(step)
        top = self._top()
        lms = self._rollout_lms(step)
        draws = [(lm, i, self._softmax(rng, top, self.owner.temperature_for_sampling)) for lm in lms for i in batch]
        samples = await asyncio.gather(*(self._sample(p, i, lm) for lm, i, p in draws))
        scores = [s.score for s in samples]
        low, high = _percentile(scores, 10), _percentile(scores, 90)
        buckets = []
        for i in batch:
            runs = sorted((s for s in samples if s.example_index == i), key=lambda s: s.score, reverse=True)
            best, worst, mean = runs[0].score, runs[-1].score, sum(r.score for r in runs) / len(runs)
            buckets.append(((best - worst, best, best - mean), runs))
        buckets.sort(key=lambda b: b[0], reverse=True)
        # Draw every new program's source, dropped demos and strategy first (in bucket
        # order, so the draws do not depend on timing), then apply the strategies at once.
        plans = []
        for _, runs in buckets[: self.owner.num_candidates + 1]:
            source = self._softmax(rng, self._top(), self.owner.temperature_for_candidates)
            state = _copy_state(self.programs[source])
            self._drop_demos(state, rng, step)
            plans.append((state, rng.choice(self.owner.strategies), runs))
        outcomes = await asyncio.gather(
            *(self._append_demo(state, runs, low) if strategy == "append_a_demo"
              else self._append_rule(state, runs, low, high) for state, strategy, runs in plans),
            return_exceptions=True,
        )
        candidates: list[dict[str, dict[str, Any]]] = []
        strategies: list[str] = []
        for (state, strategy, _), outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, BudgetExceededError):
                raise outcome
            if isinstance(outcome, BaseException):  # one failed strategy costs one candidate, as in DSPy
                log.warning("SIMBA step %d: %s failed: %s", step, strategy, outcome)
                continue
            # A strategy that found nothing to add still leaves a candidate (with the
            # demos it dropped), as DSPy's does.
            candidates.append(state)
            strategies.append(strategy)
        runs_of = await asyncio.gather(*(self._sample_state(c, i) for c in candidates for i in batch))
        per_candidate = [
            [s.score for s in runs_of[k * len(batch):(k + 1) * len(batch)]] for k in range(len(candidates))
        ]
        return {
            "batch": batch,
            "baseline": sum(scores) / len(scores) if scores else 0.0,
            "candidates": candidates,
            "strategies": strategies,
            "scores": per_candidate,
        }

    def _apply(self, step: int, record: dict[str, Any]) -> None:
        means = [sum(s) / len(s) for s in record["scores"]]
        for state, scores in zip(record["candidates"], record["scores"], strict=True):
            self.programs.append(state)
            self.scores[len(self.programs) - 1] = list(scores)
        if means:
            best = means.index(max(means))
            self.winners.append(len(self.programs) - len(means) + best)
        self.trial_logs[step] = {"batch_baseline": record["baseline"], "candidate_scores": means,
                                 "strategies": record["strategies"]}
        log.info("SIMBA step %d: batch mean %.3f, candidates %s", step + 1, record["baseline"],
                 [round(m, 3) for m in means])

    # --- choosing ------------------------------------------------------------------------

    def _batch(self, step: int) -> list[int]:
        per_epoch = len(self.trainset) // self.owner.bsize
        epoch, slot = divmod(step, per_epoch)
        order = list(range(len(self.trainset)))
        random.Random(f"{self.seed}:simba:epoch:{epoch}").shuffle(order)
        return order[slot * self.owner.bsize:(slot + 1) * self.owner.bsize]

    def _mean(self, index: int) -> float:
        scores = self.scores.get(index) or []
        return sum(scores) / len(scores) if scores else 0.0

    def _top(self) -> list[int]:
        ranked = sorted(range(len(self.programs)), key=lambda i: (-self._mean(i), i))[: self.owner.num_candidates]
        if 0 not in ranked:
            ranked[-1] = 0  # the student always stays in the running
        return list(dict.fromkeys(ranked))

    def _softmax(self, rng: random.Random, indices: list[int], temperature: float) -> int:
        top = max(self._mean(i) for i in indices)
        weights = [math.exp((self._mean(i) - top) / temperature) for i in indices]
        return rng.choices(indices, weights=weights)[0]

    def _rollout_lms(self, step: int) -> list[Any]:
        lm = self.base.get_lm() if _single_lm(self.base) else None
        lm = lm or settings.lm
        if lm is None:
            raise ConfigurationError("SIMBA needs an LM: dspex.configure(lm=...) or student.set_lm(lm)")
        teacher = (self.owner.teacher_settings or {}).get("lm")
        count = self.owner.num_candidates
        first = step * count  # distinct rollouts per step, so the cache gives fresh samples
        lms = [lm.copy(rollout_id=first + k, temperature=ATTEMPT_TEMPERATURE) for k in range(count)]
        if teacher is not None:
            lms[0] = teacher.copy(rollout_id=first)
        return lms

    def _drop_demos(self, state: dict[str, dict[str, Any]], rng: random.Random, step: int) -> None:
        most = max((len(p["demos"]) for p in state.values()), default=0)
        cap = self.owner.max_demos or 3
        if most == 0:
            return
        drop = max(_poisson(rng, most / cap), int(most >= cap))
        gone = {rng.randrange(most) for _ in range(min(drop, most))}
        for predictor in state.values():
            predictor["demos"] = [d for k, d in enumerate(predictor["demos"]) if k not in gone]

    # --- strategies ------------------------------------------------------------------------

    async def _append_demo(self, state: dict[str, dict[str, Any]], runs: list[_Sample], low: float) -> bool:
        good = runs[0]
        if good.score <= low:
            return False
        names = {id(p): name for name, p in good.info["predictors"].items()}
        added = False
        for predictor, inputs, outputs in good.trace:
            name = names.get(id(predictor))
            if name is None:
                continue
            demo = {k: _clip(v, self.owner.demo_input_field_maxlen) for k, v in dict(inputs).items()}
            demo.update(_fields(outputs))
            demo["augmented"] = True
            # One demo per predictor: its last call in the run.
            state[name]["pending"] = demo
            added = True
        for predictor in state.values():
            demo = predictor.pop("pending", None)
            if demo is not None:
                predictor["demos"] = [*predictor["demos"], demo]
        return added

    async def _append_rule(self, state: dict[str, dict[str, Any]], runs: list[_Sample], low: float, high: float) -> bool:
        good, bad = runs[0], runs[-1]
        if good.score <= low or bad.score >= high or good.score <= bad.score:
            return False
        example = self.trainset[good.example_index]
        program = self._build(state)
        advisor = Predict(ContrastTrajectories)
        advisor.lm = self.owner.prompt_model or settings.lm
        with settings.context(trace=[]):
            result = await advisor.acall(
                program_code=program_code(self.base),
                modules_defn=describe_predictors(program),
                program_inputs=_json(dict(example.inputs())),
                oracle_metadata=_json(dict(example.labels())) if hasattr(example, "labels") else "{}",
                worse_program_trajectory=_json(_trajectory(bad)),
                worse_program_outputs=_json(_fields(bad.prediction)),
                worse_reward_value=bad.score,
                worse_reward_info=_json(bad.info.get("metadata", {})),
                better_program_trajectory=_json(_trajectory(good)),
                better_program_outputs=_json(_fields(good.prediction)),
                better_reward_value=good.score,
                better_reward_info=_json(good.info.get("metadata", {})),
                module_names=list(self.names),
            )
        advice = result.module_advice if isinstance(result.module_advice, dict) else {}
        changed = False
        for name, rule in advice.items():
            if name in state and str(rule).strip():
                state[name]["instructions"] = f"{state[name]['instructions']}\n\n{str(rule).strip()}"
                changed = True
        return changed

    # --- running programs -----------------------------------------------------------------

    def _state_of(self, program: Any) -> dict[str, dict[str, Any]]:
        return {
            name: {"instructions": p.signature.instructions, "demos": [_demo_dict(d) for d in p.demos]}
            for name, p in program.named_predictors()
        }

    def _build(self, state: dict[str, dict[str, Any]], lm: Any = None) -> Any:
        program = self.base.deepcopy()
        for name, predictor in program.named_predictors():
            predictor.signature = predictor.signature.with_instructions(state[name]["instructions"])
            predictor.demos = [Example(**d) for d in state[name]["demos"]]
            if lm is not None:
                predictor.lm = lm
        return program

    async def _sample(self, program: int, example_index: int, lm: Any = None) -> _Sample:
        sample = await self._sample_state(self.programs[program], example_index, lm)
        sample.program = program
        return sample

    async def _sample_state(self, state: dict[str, dict[str, Any]], example_index: int, lm: Any = None) -> _Sample:
        candidate = self._build(state, lm)
        predictors = dict(candidate.named_predictors())
        example = self.trainset[example_index]
        prediction: Any = None
        async with self.limit:
            with settings.context(trace=[]):
                try:
                    prediction = await candidate.acall(**example.inputs())
                except BudgetExceededError:
                    raise
                except Exception as exc:  # a failed run scores 0, as in DSPy
                    log.debug("SIMBA: a sampled run failed: %s", exc)
                trace = list(settings.trace)
        score, metadata = 0.0, {}
        if prediction is not None:
            try:
                value = self.owner.metric(example, prediction)
                score, metadata = _score(value)
            except Exception as exc:
                log.warning("SIMBA: the metric raised on a sampled run: %s", exc)
        return _Sample(example_index, -1, score, prediction, trace, {"predictors": predictors, "metadata": metadata})

    # --- the end ------------------------------------------------------------------------------

    async def _finish(self) -> Any:
        wins = len(self.winners) - 1
        spread = self.owner.num_candidates + 1
        picks = [0] * spread if wins < 1 else [round(i * wins / (spread - 1)) for i in range(spread)]
        chosen = [self.winners[i] for i in dict.fromkeys(picks)]
        scores: list[float] = []
        for index in chosen:
            program = self._build(self.programs[index])
            key = f"simba/final/{index}"
            result = await self.run_.step(key, lambda p=program: self._full(p))
            scores.append(result)
            self.run_.record_trial(index, {"program": index}, score=round(100 * result, 2), kind="final")
            self.run_.offer(program, round(100 * result, 2), f"program {index}")
        ranked = sorted(zip(scores, chosen, strict=True), key=lambda pair: (-pair[0], chosen.index(pair[1])))
        best = ranked[0][1]
        program = self._build(self.programs[best])
        program.candidate_programs = ReadOnlyList(
            {"score": s, "program": self._build(self.programs[i])} for s, i in ranked
        )
        program.trial_logs = ReadOnlyMapping(self.trial_logs)
        return program

    async def _full(self, program: Any) -> float:
        result = await self.run_.evaluate(program, self.trainset, _MetricScore(self.owner.metric),
                                          num_threads=self.owner.num_threads, max_errors=len(self.trainset))
        return float(result.score) / 100


class _MetricScore:
    """SIMBA's metric (``metric(example, prediction)``, a float or a Prediction with a
    score) as Evaluate calls a metric."""

    def __init__(self, metric: Callable[..., Any]) -> None:
        self.metric = metric

    def __call__(self, gold: Any, pred: Any, trace: Any = None) -> float:
        return _score(self.metric(gold, pred))[0]


def _score(value: Any) -> tuple[float, dict[str, Any]]:
    if isinstance(value, Prediction):
        if "score" not in value:
            raise ValueError("a metric that returns a dspex.Prediction must give it a `score` field")
        return float(value.score), {k: v for k, v in value.items() if k != "score"}
    return float(value), {}


def _single_lm(program: Any) -> bool:
    lms = {id(p.lm) for _, p in program.named_predictors() if getattr(p, "lm", None) is not None}
    return len(lms) == 1


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: small means only (a handful of demos).
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _copy_state(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"instructions": p["instructions"], "demos": list(p["demos"])} for name, p in state.items()}


def _demo_dict(demo: Any) -> dict[str, Any]:
    to_dict = getattr(demo, "toDict", None)
    return dict(to_dict()) if callable(to_dict) else dict(demo)


def _fields(value: Any) -> dict[str, Any]:
    to_dict = getattr(value, "toDict", None)
    return dict(to_dict()) if callable(to_dict) else ({} if value is None else {"output": value})


def _trajectory(sample: _Sample) -> list[dict[str, Any]]:
    names = {id(p): name for name, p in sample.info["predictors"].items()}
    return [{"module_name": names[id(p)], "inputs": dict(i), "outputs": _fields(o)}
            for p, i, o in sample.trace if id(p) in names]


def _clip(value: Any, limit: int) -> Any:
    text = str(value)
    return value if not limit or len(text) <= limit else f"{text[:limit]}\n... (cut to {limit} characters)"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=lambda v: f"<{type(v).__name__}>")


__all__ = ["SIMBA", "ContrastTrajectories"]
