"""MIPROv2: joint search over instructions and few-shot demo sets (DSPy-compatible).

1. Demo-set candidates: zero-shot, labeled-only, a bootstrap over the trainset
   in order, then bootstraps over shuffled trainsets with random sizes. All of
   them are built at once, sharing one limit on teacher runs in flight.
2. Instruction candidates from the grounded proposer (`proposer.py`): the
   predictor's own instruction first, then LM proposals, all requested at once.
3. A TPE search (optuna, seeded) over one instruction index and one demo-set
   index per predictor. Trials are scored on minibatches of the valset; every
   ``minibatch_full_eval_steps`` trials the combination with the best mean
   minibatch score is scored on the full valset, and the best full score wins.

DSPy runs each of these serially. Here the default program's full evaluation
(the baseline) starts with steps 1 and 2, and step 3 asks optuna for a batch of
``num_parallel_trials`` trials (all of TPE's random start-up trials in the first
batch: they do not depend on results), scores them concurrently next to the
full evaluations picked after the previous batch, and tells optuna the results
in trial-number order, so a fixed seed gives the same search whatever order the
work finishes in. A full evaluation reuses the per-example scores its
combination earned on minibatches and sends only the rest of the valset.
Every LM-backed unit of work is a durable run step: a resumed compile replays
what the interrupted one finished. A trial whose evaluation
fails is recorded as failed with its error and told to optuna as failed; it is
never scored 0.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dspex.errors import ConfigurationError, SearchError, SearchFailedError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.presets import (
    AUTO_PRESETS,
    SearchPlan,
    check_settings,
    estimate_lm_calls,
    resolve_plan,
    split_datasets,
    subsample,
)
from dspex.optimizers.proposer import GroundedProposer, ProposerSettings
from dspex.optimizers.run import Run
from dspex.optimizers.scoring import (
    ReadOnlyList,
    ReadOnlyMapping,
    TrialOutcome,
    gather_settled,
    lm_context,
    params_key,
    score_program,
)

log = logging.getLogger("dspex.optimizers")

#: demos shown with each proposal, and bootstrapped per set when optimizing zero-shot
DEMOS_IN_PROPOSAL = 3
#: trials TPE draws at random before it models the results (optuna's default, as in DSPy)
TPE_STARTUP_TRIALS = 10


@dataclass(frozen=True)
class CompileOptions:
    """One compile's settings, as plain values."""

    num_trials: int | None = None
    max_bootstrapped_demos: int = 4
    max_labeled_demos: int = 4
    seed: int = 9
    minibatch: bool = True
    minibatch_size: int = 35
    minibatch_full_eval_steps: int = 5
    proposer: ProposerSettings = field(default_factory=ProposerSettings)
    requires_permission_to_run: bool = False
    teacher: Any = None


class MIPROv2(Teleprompter):
    """Instruction and demo optimization with Bayesian search, trials scored in parallel batches."""

    def __init__(
        self,
        metric: Any,
        prompt_model: Any = None,
        task_model: Any = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: str | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        seed: int = 9,
        init_temperature: float = 0.5,
        verbose: bool = False,
        track_stats: bool = True,
        metric_threshold: float | None = None,
        *,
        num_parallel_trials: int = 8,
    ) -> None:
        if auto is not None and auto not in AUTO_PRESETS:
            raise ConfigurationError(
                f"auto={auto!r} is not a preset; use one of {sorted(AUTO_PRESETS)} or None"
            )
        if metric is None:
            raise ConfigurationError(
                "MIPROv2 needs a metric(example, prediction) to score candidates"
            )
        if num_parallel_trials < 1:
            raise ConfigurationError(
                f"num_parallel_trials must be at least 1, got {num_parallel_trials}"
            )
        self.metric = metric
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.teacher_settings = dict(teacher_settings or {})
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.auto = auto
        self.num_candidates = num_candidates
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.seed = seed
        self.init_temperature = init_temperature
        self.verbose = verbose
        self.track_stats = track_stats
        self.metric_threshold = metric_threshold
        self.num_parallel_trials = num_parallel_trials

    async def acompile(self, student: Any, *, trainset: Sequence[Any], **kwargs: Any) -> Any:
        # Inconsistent sizes are the caller's mistake: say so before a run is opened.
        check_settings(self.auto, self.num_candidates, kwargs.get("num_trials"))
        return await super().acompile(student, trainset=trainset, **kwargs)

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        teacher: Any = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: bool = False,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise ConfigurationError(f"MIPROv2.compile() got unexpected option(s) {sorted(kwargs)}")
        options = CompileOptions(
            num_trials=num_trials,
            max_bootstrapped_demos=_pick(max_bootstrapped_demos, self.max_bootstrapped_demos),
            max_labeled_demos=_pick(max_labeled_demos, self.max_labeled_demos),
            seed=_pick(seed, self.seed),
            minibatch=minibatch,
            minibatch_size=minibatch_size,
            minibatch_full_eval_steps=max(minibatch_full_eval_steps, 1),
            proposer=ProposerSettings(
                program_aware=program_aware_proposer,
                data_aware=data_aware_proposer,
                tip_aware=tip_aware_proposer,
                fewshot_aware=fewshot_aware_proposer,
                view_data_batch_size=view_data_batch_size,
                demos_in_context=DEMOS_IN_PROPOSAL,
                temperature=self.init_temperature,
            ),
            requires_permission_to_run=requires_permission_to_run,
            teacher=teacher,
        )
        return await self._optimize(run, student, trainset, valset, options)

    async def _optimize(
        self,
        run: Run,
        student: Any,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        options: CompileOptions,
    ) -> Any:
        program = student.deepcopy()
        trainset, full_valset = split_datasets(trainset, valset)
        plan = self.plan(program, len(full_valset), options)
        rng = random.Random(options.seed)
        valset_used = subsample(full_valset, plan.val_size, rng)
        self._announce(program, plan, len(valset_used), options)
        if options.requires_permission_to_run and not await _confirmed():
            log.info("MIPROv2: compile declined by the user; returning the student unchanged")
            return program
        # Importing optuna takes ~0.2 s of CPU: do it in a thread while the first
        # LM calls are in flight, not on the event loop when the search starts.
        optuna_ready = asyncio.ensure_future(asyncio.to_thread(importlib.import_module, "optuna"))
        proposer = self._proposer(run, options)
        # Grounding (dataset summary, program description) does not need the demo
        # sets, so it runs while they are bootstrapped; proposals then need both.
        grounding = asyncio.ensure_future(proposer.ground(program, trainset))
        # The default program (own instructions, no demos) needs no candidates: its full
        # evaluation, the search's baseline, runs from the start as well.
        baseline = asyncio.ensure_future(
            self._score_baseline(run, program, plan.zeroshot, valset_used)
        )
        try:
            demo_sets = await self.demo_candidates(run, program, trainset, plan, options)
            instructions = await self.instruction_candidates(
                run,
                program,
                trainset,
                plan,
                options,
                demo_sets,
                proposer=proposer,
                grounding=await grounding,
            )
            await optuna_ready
            search = _Search(
                self,
                run,
                program,
                instructions,
                None if plan.zeroshot else demo_sets,
                valset_used,
                plan,
                options,
            )
            return await search.run(await baseline)
        finally:
            for task in (grounding, baseline):
                task.cancel()
            await asyncio.gather(grounding, baseline, return_exceptions=True)

    async def _score_baseline(
        self, run: Run, program: Any, zeroshot: bool, valset: list[Any]
    ) -> _Scored:
        params = default_params(len(program.named_predictors()), with_demos=not zeroshot)
        candidate = program.deepcopy()
        if not zeroshot:
            for _, predictor in candidate.named_predictors():
                predictor.demos = []  # demo set 0 is the empty set
        outcome = await self._score(run, f"mipro/full/{params_key(params)}", candidate, valset)
        return _Scored(-1, params, "full", outcome, candidate)

    async def _score(self, run: Run, key: str, candidate: Any, devset: list[Any]) -> TrialOutcome:
        """Score ``candidate`` as the step ``key``, keeping per-example scores for reuse."""
        return await score_program(
            run,
            key,
            candidate,
            devset,
            self.metric,
            num_threads=self.num_threads,
            max_errors=self.max_errors,
            lm=self.task_model,
            keep_example_scores=True,
        )

    def plan(self, program: Any, valset_size: int, options: CompileOptions) -> SearchPlan:
        """The search sizes for ``program`` (see `presets.resolve_plan`)."""
        return resolve_plan(
            auto=self.auto,
            num_candidates=self.num_candidates,
            num_trials=options.num_trials,
            num_predictors=len(program.named_predictors()),
            valset_size=valset_size,
            max_bootstrapped_demos=options.max_bootstrapped_demos,
            max_labeled_demos=options.max_labeled_demos,
            minibatch=options.minibatch,
            minibatch_size=options.minibatch_size,
        )

    def _proposer(self, run: Run, options: CompileOptions) -> GroundedProposer:
        return GroundedProposer(
            self.prompt_model,
            settings=options.proposer,
            seed=options.seed,
            steps=run,
            key_prefix="mipro/propose",
        )

    # --- step 1: demo sets -----------------------------------------------------------------

    async def demo_candidates(
        self, run: Run, program: Any, trainset: list[Any], plan: SearchPlan, options: CompileOptions
    ) -> list[list[list[Any]]]:
        """``[set index][predictor index] -> demos``, built concurrently.

        Zero-shot optimization needs no demo sets: its proposals are shown
        labeled examples instead of paying for bootstraps only to ground them.
        """
        if plan.zeroshot:
            return []
        from dspex.optimizers.bootstrap import Limiter
        from dspex.optimizers.labeled import with_labeled_demos

        # One bound on teacher runs in flight across all bootstraps; earlier sets go first.
        limiter = Limiter(self.num_threads or _settings_threads())
        jobs = []
        for index in range(plan.num_fewshot_candidates):
            if index == 0:
                jobs.append(_ready([[] for _ in program.named_predictors()]))
            elif index == 1:
                labeled = with_labeled_demos(
                    program.reset_copy(), trainset, options.max_labeled_demos
                )
                jobs.append(_ready(_demos_of(labeled)))
            else:
                jobs.append(self._bootstrapped_set(run, program, trainset, index, limiter, options))
        # Bootstraps that finish before a sibling fails stay stored for a resumed run.
        return await gather_settled(jobs)

    async def _bootstrapped_set(
        self,
        run: Run,
        program: Any,
        trainset: list[Any],
        index: int,
        limiter: Any,
        options: CompileOptions,
    ) -> list[list[Any]]:
        from dspex.optimizers.bootstrap import BootstrapFewShot

        examples = list(trainset)
        count = options.max_bootstrapped_demos
        if index > 2:
            # Later sets: a shuffled trainset and a random number of bootstrapped demos.
            rng = random.Random(f"{options.seed}:demos:{index}")
            rng.shuffle(examples)
            count = rng.randint(min(1, count), count)
        bootstrapper = BootstrapFewShot(
            metric=self.metric,
            metric_threshold=self.metric_threshold,
            teacher_settings=self.teacher_settings,
            max_bootstrapped_demos=count,
            max_labeled_demos=options.max_labeled_demos,
            max_errors=self.max_errors,
            num_threads=self.num_threads,
        )
        with lm_context(self.task_model):
            built = await bootstrapper.build(
                program,
                trainset=examples,
                teacher=options.teacher,
                step=run.step,
                limiter=limiter,
                key=f"mipro/demos/{index}",
                priority=index,
            )
        return _demos_of(built)

    # --- step 2: instructions ---------------------------------------------------------------

    async def instruction_candidates(
        self,
        run: Run,
        program: Any,
        trainset: list[Any],
        plan: SearchPlan,
        options: CompileOptions,
        demo_sets: list[list[list[Any]]],
        *,
        proposer: GroundedProposer | None = None,
        grounding: tuple[str, Any] | None = None,
    ) -> list[list[str]]:
        """``[predictor index] -> [own instruction, proposals...]``."""
        proposer = proposer or self._proposer(run, options)
        per_predictor = (
            [[s[i] for s in demo_sets] for i in range(len(program.named_predictors()))]
            if demo_sets
            else None
        )
        candidates = await proposer.propose_instructions(
            program, trainset, plan.num_instruct_candidates, per_predictor, grounding=grounding
        )
        for index, texts in enumerate(candidates):
            log.log(
                self._level,
                "MIPROv2: %d instruction candidate(s) for predictor %d",
                len(texts),
                index,
            )
            for number, text in enumerate(texts):
                log.debug("  %d: %s", number, text)
        return candidates

    # --- helpers ------------------------------------------------------------------------------

    @property
    def _level(self) -> int:
        return logging.INFO if self.verbose else logging.DEBUG

    def _announce(
        self, program: Any, plan: SearchPlan, valset_size: int, options: CompileOptions
    ) -> None:
        estimate = estimate_lm_calls(
            plan,
            num_predictors=len(program.named_predictors()),
            valset_size=valset_size,
            program_aware=options.proposer.program_aware,
            minibatch_full_eval_steps=options.minibatch_full_eval_steps,
        )
        log.info(
            "MIPROv2%s: %d trials, %d demo sets, %d instructions per predictor, valset %d, "
            "minibatch %s; at most ~%d prompt-model and ~%d task-model calls",
            f" auto={self.auto}" if self.auto else "",
            plan.num_trials,
            plan.num_fewshot_candidates,
            plan.num_instruct_candidates,
            valset_size,
            plan.minibatch_size if plan.minibatch else "off",
            estimate["prompt_model_calls"],
            estimate["task_model_calls"],
        )


# --- step 3: the search ---------------------------------------------------------------------


@dataclass
class _Scored:
    number: int
    params: dict[str, int]
    kind: str
    outcome: TrialOutcome
    program: Any


class _Search:
    """TPE over (instruction, demo set) per predictor, in batches of concurrent trials."""

    def __init__(
        self,
        owner: MIPROv2,
        run: Run,
        program: Any,
        instructions: list[list[str]],
        demo_sets: list[list[list[Any]]] | None,
        valset: list[Any],
        plan: SearchPlan,
        options: CompileOptions,
    ) -> None:
        self.owner = owner
        self.run_ = run
        self.program = program
        self.instructions = instructions
        self.demo_sets = demo_sets
        self.valset = valset
        self.plan = plan
        self.options = options
        self.distributions = self._distributions()
        self.study = self._study()
        self.minibatch_scores: dict[str, list[float]] = {}
        self.combos: dict[str, dict[str, int]] = {}
        self.fully_evaluated: set[str] = set()
        self.example_scores: dict[str, dict[int, float]] = {}
        self.history: list[_Scored] = []
        self.eval_calls = 0

    async def run(self, baseline: _Scored) -> Any:
        """Ask, score and tell batches of trials; score chosen combinations fully.

        Full evaluations chosen after a batch run alongside the next batch and join
        the study before the ask after it, so every ask sees the same results
        whatever order the work finishes in. The last ones start as soon as the last
        trials are told, not when the full evaluations before them end.
        """
        # The default program's full score is the study's first trial, as in DSPy.
        self._settle_full(baseline)
        running: asyncio.Future[list[_Scored]] | None = None
        done = 0
        try:
            while done < self.plan.num_trials:
                size = min(self._batch_size(), self.plan.num_trials - done)
                asked = [self.study.ask(self.distributions) for _ in range(size)]
                # Every trial is a stored step: finished ones land even if a sibling fails.
                scored = await gather_settled(
                    self._trial(trial.number, dict(trial.params)) for trial in asked
                )
                for trial, result in zip(asked, scored, strict=True):
                    self._tell(trial, result)
                previous, done = done, done + size
                chosen = self._next_full_evaluations(previous, done)
                launched = asyncio.ensure_future(gather_settled(self._full(p) for p in chosen))
                earlier, running = running, launched
                if earlier is not None:
                    self._settle_fulls(await earlier)
            if running is not None:
                self._settle_fulls(await running)
        except asyncio.CancelledError:
            if running is not None:
                running.cancel()
            raise
        except BaseException:
            if running is not None:  # let stored work land before the error surfaces
                await asyncio.gather(running, return_exceptions=True)
            raise
        return self._best()

    def _settle_fulls(self, results: list[_Scored]) -> None:
        for scored in results:
            self._settle_full(scored)

    # --- one batch -------------------------------------------------------------------

    def _batch_size(self) -> int:
        """Trials to ask for at once: ``num_parallel_trials``, or more while TPE is in
        its start-up phase. Until ``TPE_STARTUP_TRIALS`` trials are complete it draws
        at random, whatever the results, so asking for all of those now gives the
        very draws a one-at-a-time search would make."""
        from optuna.trial import TrialState

        complete = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return max(self.owner.num_parallel_trials, TPE_STARTUP_TRIALS - complete)

    async def _trial(self, number: int, params: dict[str, int]) -> _Scored:
        if not self.plan.minibatch:
            return await self._full(params, number)
        rng = random.Random(f"{self.options.seed}:minibatch:{number}")
        picked = rng.sample(
            range(len(self.valset)), min(self.plan.minibatch_size, len(self.valset))
        )
        candidate = self._build(params)
        key = f"mipro/trial/{number}/{params_key(params)}"
        outcome = await self._score(key, candidate, [self.valset[i] for i in picked])
        if len(outcome.example_scores) == len(picked):
            # Remembered for this combination's full evaluation, which then sends only
            # the rest of the valset (what an LM cache would answer anyway).
            self.example_scores.setdefault(params_key(params), {}).update(
                zip(picked, outcome.example_scores, strict=True)
            )
        return _Scored(number, params, "minibatch", outcome, candidate)

    async def _full(self, params: dict[str, int], number: int = -1) -> _Scored:
        candidate = self._build(params)
        known = dict(self.example_scores.get(params_key(params), {}))
        rest = [i for i in range(len(self.valset)) if i not in known]
        # Keyed by content: the same combination on the same valset is the same work.
        key = f"mipro/full/{params_key(params)}"
        if rest:
            outcome = await self._score(key, candidate, [self.valset[i] for i in rest])
        else:
            outcome = TrialOutcome(0.0)
        if known and outcome.score is not None:
            scores = outcome.example_scores
            # An evaluator that returns no per-example rows still gives the mean.
            rest_total = sum(scores) if len(scores) == len(rest) else outcome.score * len(rest) / 100
            score = round(100 * (sum(known.values()) + rest_total) / len(self.valset), 2)
            outcome = replace(outcome, score=score, example_scores=())
        return _Scored(number, params, "full", outcome, candidate)

    async def _score(self, key: str, candidate: Any, devset: list[Any]) -> TrialOutcome:
        return await self.owner._score(self.run_, key, candidate, devset)

    # --- telling optuna, recording ------------------------------------------------------

    def _tell(self, trial: Any, scored: _Scored) -> None:
        from optuna.trial import TrialState

        outcome = scored.outcome
        if outcome.score is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, outcome.score)
        self._log(scored)
        if scored.kind == "full":
            self._note_full(scored)
        elif outcome.score is not None:
            combo = params_key(scored.params)
            self.combos.setdefault(combo, scored.params)
            self.minibatch_scores.setdefault(combo, []).append(outcome.score)

    def _settle_full(self, scored: _Scored) -> None:
        # A full evaluation (the baseline, or a combination picked from the minibatch
        # results) joins the study as a finished trial of its own.
        import optuna
        from optuna.trial import TrialState

        score = scored.outcome.score
        frozen = optuna.trial.create_trial(
            params=scored.params,
            distributions=self.distributions,
            value=score,
            state=TrialState.COMPLETE if score is not None else TrialState.FAIL,
        )
        self.study.add_trial(frozen)
        scored = replace(scored, number=self.study.trials[-1].number)
        self._log(scored)
        self._note_full(scored)

    def _note_full(self, scored: _Scored) -> None:
        self.fully_evaluated.add(params_key(scored.params))
        if scored.outcome.score is not None:
            self.run_.offer(scored.program, scored.outcome.score, f"trial {scored.number}")

    def _log(self, scored: _Scored) -> None:
        outcome = scored.outcome
        self.history.append(scored)
        self.eval_calls += outcome.n_examples
        self.run_.record_trial(
            scored.number,
            scored.params,
            score=outcome.score,
            error=outcome.exception(),
            kind=scored.kind,
        )
        if outcome.score is None:
            log.warning(
                "MIPROv2 trial %d (%s) failed: %s", scored.number, scored.kind, outcome.exception()
            )
        else:
            log.log(
                self.owner._level,
                "MIPROv2 trial %d (%s) scored %.2f with %s",
                scored.number,
                scored.kind,
                outcome.score,
                scored.params,
            )

    def _next_full_evaluations(self, previous: int, done: int) -> list[dict[str, int]]:
        """Combinations to score on the full valset after ``done`` minibatch trials."""
        if not self.plan.minibatch:
            return []
        steps = self.options.minibatch_full_eval_steps
        count = done // steps - previous // steps
        if done >= self.plan.num_trials and done % steps:
            count += 1  # a last full evaluation for the trials since the previous one
        ranked = sorted(
            (combo for combo in self.minibatch_scores if combo not in self.fully_evaluated),
            key=lambda combo: _mean(self.minibatch_scores[combo]),
            reverse=True,  # sorted() is stable: equal means keep first-seen order
        )
        chosen = ranked[:count]
        self.fully_evaluated.update(chosen)
        return [self.combos[combo] for combo in chosen]

    # --- building ------------------------------------------------------------------------

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        distributions: dict[str, Any] = {}
        for index, texts in enumerate(self.instructions):
            distributions[f"{index}_predictor_instruction"] = CategoricalDistribution(
                list(range(len(texts)))
            )
            if self.demo_sets is not None:
                distributions[f"{index}_predictor_demos"] = CategoricalDistribution(
                    list(range(len(self.demo_sets)))
                )
        return distributions

    def _study(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            # multivariate TPE is flagged experimental; DSPy uses it too.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self.options.seed,
                multivariate=True,
                constant_liar=True,
                n_startup_trials=TPE_STARTUP_TRIALS,
            )
        return optuna.create_study(direction="maximize", sampler=sampler)

    def _build(self, params: dict[str, int]) -> Any:
        candidate = self.program.deepcopy()
        for index, (_, predictor) in enumerate(candidate.named_predictors()):
            text = self.instructions[index][params[f"{index}_predictor_instruction"]]
            predictor.signature = predictor.signature.with_instructions(text)
            if self.demo_sets is not None:
                predictor.demos = list(self.demo_sets[params[f"{index}_predictor_demos"]][index])
        return candidate

    # --- the result ---------------------------------------------------------------------------

    def _best(self) -> Any:
        fulls = [s for s in self.history if s.kind == "full" and s.outcome.score is not None]
        if not fulls:
            raise SearchError(
                "MIPROv2 could not score any candidate on the full valset: every full evaluation "
                "failed (the run's trials list each error)"
            )
        best = fulls[0]
        for scored in fulls[1:]:
            if scored.outcome.score > best.outcome.score:  # type: ignore[operator]
                best = scored  # strictly better: ties keep the earlier trial
        program = best.program.deepcopy()
        if self.owner.track_stats:
            self._attach_stats(program, best)
        return program

    def _attach_stats(self, program: Any, best: _Scored) -> None:
        program.score = best.outcome.score
        program.trial_logs = ReadOnlyMapping({s.number: _trial_log(s) for s in self.history})
        ranked = sorted(self.history, key=lambda s: s.outcome.score or 0.0, reverse=True)
        scored = [s for s in ranked if s.outcome.score is not None]
        program.candidate_programs = ReadOnlyList(_candidate(s) for s in scored if s.kind == "full")
        program.mb_candidate_programs = ReadOnlyList(
            _candidate(s) for s in scored if s.kind != "full"
        )
        program.total_calls = self.eval_calls


def _trial_log(scored: _Scored) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": scored.kind, "params": dict(scored.params)}
    prefix = "full_eval" if scored.kind == "full" else "mb"
    entry[f"{prefix}_score"] = scored.outcome.score
    entry[f"{prefix}_program"] = scored.program
    if scored.outcome.score is None:
        entry["error"] = str(scored.outcome.exception())
    return entry


def _candidate(scored: _Scored) -> dict[str, Any]:
    return {
        "score": scored.outcome.score,
        "program": scored.program,
        "params": dict(scored.params),
        "trial": scored.number,
        "full_eval": scored.kind == "full",
    }


def default_params(num_predictors: int, *, with_demos: bool) -> dict[str, int]:
    """The default program's choices: each predictor's own instruction and demo set 0."""
    params: dict[str, int] = {}
    for index in range(num_predictors):
        params[f"{index}_predictor_instruction"] = 0
        if with_demos:
            params[f"{index}_predictor_demos"] = 0
    return params


def _demos_of(program: Any) -> list[list[Any]]:
    return [list(predictor.demos) for _, predictor in program.named_predictors()]


async def _ready(value: Any) -> Any:
    return value


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _settings_threads() -> int:
    from dspex.primitives.settings import settings

    return int(settings.num_threads)


async def _confirmed() -> bool:
    """Ask on the terminal whether to go on; a non-interactive run goes on."""
    if not sys.stdin.isatty():
        log.info(
            "MIPROv2: requires_permission_to_run is set but stdin is not a terminal; proceeding"
        )
        return True
    answer = await asyncio.to_thread(input, "MIPROv2: proceed with these LM calls? [y/n] ")
    return answer.strip().lower() not in ("n", "no")


__all__ = ["CompileOptions", "MIPROv2", "SearchFailedError"]
