"""COPRO: coordinate ascent over each predictor's instruction, with LM-written candidates.

Per predictor, the prompt model drafts ``breadth - 1`` instructions from the
current one (plus a few task examples, so the drafts are about the task); with
the original these are the first round. Each later round (``depth`` in all)
shows the prompt model the best attempts so far with their scores and asks for
``breadth`` better ones. Predictors are improved one after another, the others
held at their best so far.

Where DSPy scores candidates one at a time, here every candidate of a round is
scored concurrently, and the next round's drafts for all predictors are
requested at once. A candidate program is scored once however often it comes
up: scores are keyed by the program's instructions, and each is a durable run
step, so a resumed run replays them. Every score is a recorded trial.

dspex signatures have no output prefixes (DSPy deprecated them too): the
proposed prefix is kept in the trial record and stats, not applied.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.proposer import render_examples
from dspex.optimizers.run import Run
from dspex.optimizers.scoring import (
    ReadOnlyList,
    TrialOutcome,
    gather_all,
    gather_settled,
    params_key,
    score_program,
)
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature

log = logging.getLogger("dspex.optimizers")


class DraftInstruction(Signature):
    """You improve the instructions that large language models are given for a task. Read the
    task's current instruction and a few examples of the task, then write an instruction that
    would help a language model solve the task more accurately, and a short phrase to begin
    the output with."""

    basic_instruction: str = InputField(desc="the instruction the task uses now")
    task_examples: str = InputField(desc="a few examples of the task")
    proposed_instruction: str = OutputField(desc="an improved instruction for the task")
    proposed_prefix_for_output_field: str = OutputField(
        desc="a short phrase to begin the output with"
    )


class RefineInstruction(Signature):
    """You improve the instructions that large language models are given for a task. Below are
    instructions already tried on the task, each with its score (higher is better), from worst
    to best. Work out what the better ones do differently, then write a new instruction that
    should score higher than all of them, and a short phrase to begin the output with."""

    attempted_instructions: str = InputField(
        desc="instructions tried so far with their scores, worst first"
    )
    task_examples: str = InputField(desc="a few examples of the task")
    proposed_instruction: str = OutputField(desc="a new instruction expected to score higher")
    proposed_prefix_for_output_field: str = OutputField(
        desc="a short phrase to begin the output with"
    )


@dataclass(frozen=True)
class Draft:
    instruction: str
    prefix: str = ""


@dataclass
class Attempt:
    instruction: str
    prefix: str
    score: float
    depth: int


@dataclass
class _State:
    """Where the search stands: the current instructions and every score so far."""

    names: list[str]
    current: dict[str, str]
    scores: dict[tuple[str, ...], TrialOutcome] = field(default_factory=dict)
    attempts: dict[str, dict[str, Attempt]] = field(default_factory=dict)
    trial_number: int = 0

    def fingerprint(self, name: str, instruction: str) -> tuple[str, ...]:
        return tuple(instruction if n == name else self.current[n] for n in self.names)


class COPRO(Teleprompter):
    """Instruction optimization by coordinate ascent (DSPy's COPRO), candidates scored in parallel."""

    def __init__(
        self,
        prompt_model: Any = None,
        metric: Any = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        *,
        num_threads: int | None = None,
        max_errors: int | None = None,
        num_task_examples: int = 3,
        seed: int = 0,
    ) -> None:
        if breadth <= 1:
            raise ConfigurationError(
                f"COPRO needs breadth > 1 (candidates per round), got {breadth}"
            )
        if depth < 1:
            raise ConfigurationError(f"COPRO needs depth >= 1 (rounds), got {depth}")
        if metric is None:
            raise ConfigurationError(
                "COPRO needs a metric(example, prediction) to score candidates"
            )
        self.prompt_model = prompt_model
        self.metric = metric
        self.breadth = breadth
        self.depth = depth
        self.init_temperature = init_temperature
        self.track_stats = track_stats
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.num_task_examples = num_task_examples
        self.seed = seed

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        eval_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise ConfigurationError(f"COPRO.compile got unexpected arguments {sorted(kwargs)}")
        devset = list(valset) if valset is not None else trainset
        eval_options = self._eval_options(eval_kwargs or {})
        program = student.deepcopy()
        names = [name for name, _ in program.named_predictors()]
        state = _State(names, {n: _instruction(program, n) for n in names})
        state.attempts = {n: {} for n in names}
        examples = self._task_examples(trainset)
        stats: dict[str, dict[str, dict[str, list[float]]]] = {"best": {}, "latest": {}}

        drafts = await gather_all([self._draft(run, state, n, examples) for n in names])
        rounds = dict(zip(names, drafts, strict=True))
        for depth in range(self.depth):
            for name in names:
                latest = await self._score_round(
                    run, program, state, name, rounds[name], depth, devset, eval_options
                )
                self._track(stats, state, name, latest, depth)
            if depth + 1 < self.depth:
                refined = await gather_all(
                    [self._refine(run, state, n, examples, depth) for n in names]
                )
                rounds = dict(zip(names, refined, strict=True))
        return self._result(program, state, stats)

    # --- proposing -------------------------------------------------------------------

    async def _draft(self, run: Run, state: _State, name: str, examples: str) -> list[Draft]:
        original = Draft(state.current[name])
        drafts = await self._propose(
            run,
            f"copro/propose/{name}/0",
            DraftInstruction,
            self.breadth - 1,
            basic_instruction=state.current[name],
            task_examples=examples,
        )
        return [*drafts, original]

    async def _refine(
        self, run: Run, state: _State, name: str, examples: str, depth: int
    ) -> list[Draft]:
        best = sorted(state.attempts[name].values(), key=lambda a: a.score)[-self.breadth :]
        history = "\n\n".join(
            f"Instruction #{i}: {a.instruction}\nPrefix #{i}: {a.prefix or '(none)'}\nScore #{i}: {a.score:.2f}"
            for i, a in enumerate(best, 1)
        )
        return await self._propose(
            run,
            f"copro/propose/{name}/{depth + 1}",
            RefineInstruction,
            self.breadth,
            attempted_instructions=history or "(no scored attempts yet)",
            task_examples=examples,
        )

    async def _propose(
        self, run: Run, key: str, signature: Any, n: int, **inputs: str
    ) -> list[Draft]:
        from dspex.modules.predict import Predict

        async def call() -> list[tuple[str, str]]:
            config = {"n": n, "temperature": self.init_temperature}
            prediction = await Predict(signature).acall(
                lm=self.prompt_model, config=config, **inputs
            )
            return [
                (
                    str(c.get("proposed_instruction") or "").strip(),
                    str(c.get("proposed_prefix_for_output_field") or "").strip(),
                )
                for c in prediction.completions
            ]

        pairs = await run.step(key, call)
        return [Draft(instruction, prefix) for instruction, prefix in pairs if instruction]

    # --- scoring -----------------------------------------------------------------------

    async def _score_round(
        self,
        run: Run,
        program: Any,
        state: _State,
        name: str,
        drafts: list[Draft],
        depth: int,
        devset: list[Any],
        eval_options: dict[str, Any],
    ) -> list[Attempt]:
        """Score this predictor's drafts (and its current best) concurrently, then keep the best."""
        unique: dict[str, Draft] = {}
        for draft in [Draft(state.current[name]), *drafts]:
            unique.setdefault(draft.instruction, draft)
        fingerprints = [state.fingerprint(name, text) for text in unique]
        fresh = [fp not in state.scores for fp in fingerprints]
        outcomes = await gather_settled(
            [self._score(run, program, state, fp, devset, eval_options) for fp in fingerprints]
        )
        latest: list[Attempt] = []
        contenders: list[Attempt] = []
        for draft, fp, is_new, outcome in zip(
            unique.values(), fingerprints, fresh, outcomes, strict=True
        ):
            if is_new:
                self._record(run, state, name, draft, depth, outcome)
            score = _ranked_score(outcome)
            attempt = state.attempts[name].get(draft.instruction) or Attempt(
                draft.instruction, draft.prefix, score, depth
            )
            attempt.score = score
            state.attempts[name][draft.instruction] = attempt
            contenders.append(attempt)
            if is_new:
                latest.append(attempt)
                candidate = _with_instructions(program, state.names, fp)
                run.offer(candidate, score, f"{name} depth {depth}")
        if contenders:
            # max() keeps the first of equals: the current instruction, listed first.
            state.current[name] = max(contenders, key=lambda a: a.score).instruction
        return latest

    async def _score(
        self,
        run: Run,
        program: Any,
        state: _State,
        fingerprint: tuple[str, ...],
        devset: list[Any],
        eval_options: dict[str, Any],
    ) -> TrialOutcome:
        known = state.scores.get(fingerprint)
        if known is not None:
            return known
        candidate = _with_instructions(program, state.names, fingerprint)
        key = f"copro/score/{params_key({'instructions': list(fingerprint)})}"
        outcome = await score_program(run, key, candidate, devset, self.metric, **eval_options)
        state.scores[fingerprint] = outcome
        return outcome

    def _record(
        self, run: Run, state: _State, name: str, draft: Draft, depth: int, outcome: TrialOutcome
    ) -> None:
        params = {
            "predictor": name,
            "depth": depth,
            "instruction": draft.instruction,
            "prefix": draft.prefix,
        }
        run.record_trial(
            state.trial_number,
            params,
            score=outcome.score,
            error=outcome.exception(),
            kind="candidate",
        )
        state.trial_number += 1

    # --- results -----------------------------------------------------------------------

    def _track(
        self, stats: dict[str, Any], state: _State, name: str, latest: list[Attempt], depth: int
    ) -> None:
        if not self.track_stats:
            return
        top = sorted(a.score for a in state.attempts[name].values())[-self.breadth :]
        _append_stats(stats["best"].setdefault(name, _empty_stats()), top, depth)
        _append_stats(
            stats["latest"].setdefault(name, _empty_stats()), [a.score for a in latest], depth
        )

    def _result(self, program: Any, state: _State, stats: dict[str, Any]) -> Any:
        scored = [(fp, _ranked_score(o)) for fp, o in state.scores.items()]
        if all(o.score is None for o in state.scores.values()):
            log.warning(
                "COPRO could not score any candidate: every evaluation failed (scored 0; the "
                "run's trials hold the errors). The program returned has the first instructions."
            )
        ranked = sorted(
            scored, key=lambda item: item[1], reverse=True
        )  # stable: earliest first on ties
        best = _with_instructions(program, state.names, ranked[0][0])
        best.score = ranked[0][1]
        # A read-only sequence, not a list: the program's parameter walk must not
        # mistake the candidates' predictors for its own.
        best.candidate_programs = ReadOnlyList(
            [
                {
                    "score": score,
                    "instructions": dict(zip(state.names, fp, strict=True)),
                    "program": _with_instructions(program, state.names, fp),
                }
                for fp, score in ranked
            ]
        )
        best.total_calls = len(state.scores)
        if self.track_stats:
            best.results_best = stats["best"]
            best.results_latest = stats["latest"]
        return best

    def _eval_options(self, eval_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "num_threads": eval_kwargs.get("num_threads", self.num_threads),
            "max_errors": eval_kwargs.get("max_errors", self.max_errors),
        }

    def _task_examples(self, trainset: list[Any]) -> str:
        rng = random.Random(f"{self.seed}:copro:examples")
        picked = rng.sample(trainset, min(self.num_task_examples, len(trainset)))
        return render_examples(picked) or "(no examples)"


def _instruction(program: Any, name: str) -> str:
    return str(dict(program.named_predictors())[name].signature.instructions)


def _with_instructions(program: Any, names: list[str], instructions: Sequence[str]) -> Any:
    candidate = program.deepcopy()
    predictors = dict(candidate.named_predictors())
    for name, text in zip(names, instructions, strict=True):
        predictor = predictors[name]
        predictor.signature = predictor.signature.with_instructions(text)
    return candidate


def _empty_stats() -> dict[str, list[float]]:
    return {"depth": [], "max": [], "average": [], "min": [], "std": []}


def _append_stats(target: dict[str, list[float]], scores: list[float], depth: int) -> None:
    if not scores:
        return
    target["depth"].append(depth)
    target["max"].append(max(scores))
    target["average"].append(statistics.fmean(scores))
    target["min"].append(min(scores))
    target["std"].append(statistics.pstdev(scores))




def _ranked_score(outcome: TrialOutcome) -> float:
    """A candidate's score for ranking: a failed evaluation counts 0, as in DSPy."""
    return 0.0 if outcome.score is None else outcome.score

__all__ = ["COPRO"]
