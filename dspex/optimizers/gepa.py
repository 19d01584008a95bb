"""GEPA: reflective prompt evolution (Agrawal et al., 2025), with DSPy's ``dspy.GEPA`` API.

A candidate is one instruction per predictor. The search keeps every candidate it
accepted with its score on each validation example, and loops, within a budget of
metric calls (``auto``, ``max_full_evals`` or ``max_metric_calls``):

1. **Select a parent** (``candidate_selection_strategy``): ``"pareto"`` draws among the
   candidates that are best on at least one validation example and not dominated by
   another, weighted by how many examples each is best on; ``"current_best"`` takes the
   best mean.
2. **Reflect**: run the parent on a minibatch of the trainset
   (``reflection_minibatch_size``) with traces, ask the metric for feedback on the
   predictor whose turn it is (round robin per candidate), and give the reflection
   step (`ProposeInstruction`, on ``reflection_lm``) the current instruction and each
   example's inputs, outputs and feedback; it writes a new instruction.
3. **Accept or drop**: the child (the parent with that one instruction replaced) runs on
   the same minibatch; only if it scores higher in total is it scored on the whole
   valset and added.
4. **Merge** (``use_merge``): after a new candidate, up to ``max_merge_invocations``
   times, two frontier candidates descended from a common ancestor are combined
   predictor by predictor (each takes the instruction its line of descent changed),
   tried on a few validation examples where the parents differ, and added if it does at
   least as well as both there and on the whole valset.

The metric is ``metric(gold, pred, trace, pred_name, pred_trace)``; it returns a float,
or ``dspex.Prediction(score=..., feedback=...)`` (feedback for ``pred_name`` when given).

How it runs here: the reference loop runs one iteration after another; here up to
``num_parallel_proposals`` (8) iterations run at once, in two phases, each choosing its
parent from the pool as it stood when the batch began: all propose a child and score it
on their minibatches together, then the children that beat their parents are scored on
the valset together, in iteration order while the budget lasts; their results join the
pool in iteration order, so a seed fixes the result whatever order the work finishes in
(``num_parallel_proposals=1`` is the sequential loop). Merges run between batches. The
examples of every evaluation run concurrently too (on EvalWorkers with the runtime up).
Every proposal, validation and merge is one durable step of the run, its random choices
drawn from ``seed`` and the iteration number, so a resumed run (``run_id=``) replays the
finished steps and ends with the program an uninterrupted run gives. The metric budget
holds exactly: a batch is only as wide as the minibatches the budget has left, and a
child is scored on the valset only while the budget still holds a full valset. LM
budgets (``max_lm_calls``/``max_cost``) hold as for every optimizer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dspex.errors import BudgetExceededError, ConfigurationError, SearchError
from dspex.modules.predict import Predict
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.run import Run
from dspex.optimizers.scoring import gather_settled
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature

log = logging.getLogger("dspex.optimizers")

#: DSPy's auto presets: the number of candidates the budget is sized for
AUTO_RUN_SETTINGS: dict[str, dict[str, int]] = {"light": {"n": 6}, "medium": {"n": 12}, "heavy": {"n": 18}}
_MERGE_SUBSAMPLE = 5


class ProposeInstruction(Signature):
    """You improve the instruction of one step of a language-model program. You are given
    the step's current instruction and examples of its work: the inputs it received, the
    outputs it wrote, and feedback on how good the result was. Work out what the feedback
    says went wrong and which general rules would have avoided it. Then write a new,
    complete instruction for the step that keeps what already works and states those
    rules plainly, so the step does better on inputs like these."""

    current_instruction: str = InputField(desc="the step's instruction now")
    examples_with_feedback: str = InputField(desc="the step's inputs, its outputs and the feedback, per example")
    new_instruction: str = OutputField(desc="the improved instruction, complete, ready to use as is")


@dataclass(frozen=True)
class GEPAResult:
    """What a ``track_stats=True`` run found (``compiled.detailed_results``): every accepted
    candidate, its parents, its score on each validation example and their mean, the
    candidates best on each example, and the metric calls spent when each was found."""

    candidates: list[Any]
    parents: list[list[int | None]]
    val_aggregate_scores: list[float]
    val_subscores: list[dict[int, float]]
    per_val_instance_best_candidates: dict[int, set[int]]
    discovery_eval_counts: list[int]
    total_metric_calls: int
    num_full_val_evals: int
    seed: int | None
    best_outputs_valset: dict[int, list[tuple[int, Any]]] | None = None

    @property
    def best_idx(self) -> int:
        scores = self.val_aggregate_scores
        return max(range(len(scores)), key=lambda i: scores[i])

    @property
    def best_candidate(self) -> Any:
        return self.candidates[self.best_idx]

    @property
    def highest_score_achieved_per_val_task(self) -> list[float]:
        return [max(s[i] for s in self.val_subscores) for i in range(len(self.val_subscores[0]))]


@dataclass
class _Pool:
    """The accepted candidates and what is known of them (rebuilt from the run's steps)."""

    names: list[str]
    instructions: list[dict[str, str]] = field(default_factory=list)
    parents: list[list[int | None]] = field(default_factory=list)
    val_scores: list[list[float]] = field(default_factory=list)
    found_at: list[int] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)  # round robin: next predictor per candidate
    metric_calls: int = 0
    full_evals: int = 0
    merges: int = 0
    tried_merges: set[tuple[int, int]] = field(default_factory=set)
    new_since_merge: bool = False

    def add(self, instructions: dict[str, str], parents: list[int | None], scores: list[float]) -> int:
        self.instructions.append(dict(instructions))
        self.parents.append(list(parents))
        self.val_scores.append(list(scores))
        self.found_at.append(self.metric_calls)
        self.turns.append(0)
        self.full_evals += 1
        return len(self.instructions) - 1

    def mean(self, index: int) -> float:
        scores = self.val_scores[index]
        return sum(scores) / len(scores) if scores else 0.0

    def best(self) -> int:
        return max(range(len(self.instructions)), key=lambda i: (self.mean(i), -i))

    def best_per_instance(self) -> dict[int, set[int]]:
        best: dict[int, set[int]] = {}
        for instance in range(len(self.val_scores[0])):
            top = max(scores[instance] for scores in self.val_scores)
            best[instance] = {i for i, scores in enumerate(self.val_scores) if scores[instance] == top}
        return best

    def frontier(self) -> dict[int, int]:
        """Candidates best on some instance and dominated by none -> how many instances."""
        counts: dict[int, int] = {}
        for winners in self.best_per_instance().values():
            for index in winners:
                counts[index] = counts.get(index, 0) + 1
        survivors = dict(counts)
        for a in counts:
            for b in counts:
                if a != b and a in survivors and _dominates(self.val_scores[b], self.val_scores[a]):
                    survivors.pop(a, None)
                    break
        return survivors or counts

    def ancestors(self, index: int) -> set[int]:
        seen: set[int] = set()
        stack = [p for p in self.parents[index] if p is not None]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(p for p in self.parents[node] if p is not None)
        return seen


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


class GEPA(Teleprompter):
    def __init__(
        self,
        metric: Callable[..., Any],
        *,
        auto: Literal["light", "medium", "heavy"] | None = None,
        max_full_evals: int | None = None,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: Literal["pareto", "current_best"] = "pareto",
        reflection_lm: Any = None,
        skip_perfect_score: bool = True,
        add_format_failure_as_feedback: bool = False,
        instruction_proposer: Callable[..., dict[str, str]] | None = None,
        component_selector: str = "round_robin",
        use_merge: bool = True,
        max_merge_invocations: int | None = 5,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        perfect_score: float = 1.0,
        log_dir: str | None = None,
        track_stats: bool = False,
        track_best_outputs: bool = False,
        warn_on_score_mismatch: bool = True,
        seed: int | None = 0,
        gepa_kwargs: dict[str, Any] | None = None,
        num_parallel_proposals: int = 8,
        **logging_options: Any,
    ) -> None:
        try:
            inspect.signature(metric).bind(None, None, None, None, None)
        except TypeError as exc:
            raise ConfigurationError(
                "GEPA's metric takes five arguments: metric(gold, pred, trace, pred_name, pred_trace) "
                "(give the last ones defaults if you do not need them) and returns a float or "
                "dspex.Prediction(score=..., feedback=...)"
            ) from exc
        if (auto is not None) + (max_full_evals is not None) + (max_metric_calls is not None) != 1:
            raise ConfigurationError(
                "GEPA needs exactly one budget: auto='light'|'medium'|'heavy', max_full_evals=N or "
                f"max_metric_calls=N (got auto={auto!r}, max_full_evals={max_full_evals!r}, "
                f"max_metric_calls={max_metric_calls!r})"
            )
        if auto is not None and auto not in AUTO_RUN_SETTINGS:
            raise ConfigurationError(f"GEPA(auto={auto!r}): use one of {sorted(AUTO_RUN_SETTINGS)}")
        if candidate_selection_strategy not in ("pareto", "current_best"):
            raise ConfigurationError(
                f"GEPA(candidate_selection_strategy={candidate_selection_strategy!r}): 'pareto' or 'current_best'"
            )
        if component_selector not in ("round_robin", "all"):
            raise ConfigurationError(f"GEPA(component_selector={component_selector!r}): 'round_robin' or 'all'")
        if track_best_outputs and not track_stats:
            raise ConfigurationError("GEPA(track_best_outputs=True) needs track_stats=True")
        self.metric = metric
        self.auto = auto
        self.max_full_evals = max_full_evals
        self.max_metric_calls = max_metric_calls
        self.reflection_minibatch_size = reflection_minibatch_size
        self.candidate_selection_strategy = candidate_selection_strategy
        self.reflection_lm = reflection_lm
        self.skip_perfect_score = skip_perfect_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.instruction_proposer = instruction_proposer
        self.component_selector = component_selector
        self.use_merge = use_merge
        self.max_merge_invocations = max_merge_invocations or 0
        self.num_threads = num_threads
        self.failure_score = failure_score
        self.perfect_score = perfect_score
        self.log_dir = log_dir
        self.track_stats = track_stats
        self.track_best_outputs = track_best_outputs
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.seed = seed
        self.gepa_kwargs = dict(gepa_kwargs or {})
        if not isinstance(num_parallel_proposals, int) or num_parallel_proposals < 1:
            raise ConfigurationError(f"GEPA(num_parallel_proposals={num_parallel_proposals!r}): an int >= 1")
        self.num_parallel_proposals = num_parallel_proposals
        del logging_options  # use_wandb, use_mlflow, ...: accepted, dspex logs through its run store

    # --- budget -------------------------------------------------------------------------

    def auto_budget(
        self, num_preds: int, num_candidates: int, valset_size: int, minibatch_size: int = 35, full_eval_steps: int = 5
    ) -> int:
        """Metric calls for an ``auto`` preset (DSPy's sizing, so budgets match)."""
        trials = int(max(2 * (num_preds * 2) * math.log2(num_candidates), 1.5 * num_candidates))
        total = valset_size + num_candidates * 5 + trials * minibatch_size
        if trials == 0:
            return total
        periodic = (trials + 1) // full_eval_steps + 1
        extra = 1 if trials < full_eval_steps else 0
        return total + (periodic + extra) * valset_size

    def metric_budget(self, num_predictors: int, trainset_size: int, valset_size: int) -> int:
        if self.auto is not None:
            return self.auto_budget(max(num_predictors, 1), AUTO_RUN_SETTINGS[self.auto]["n"], valset_size)
        if self.max_full_evals is not None:
            return self.max_full_evals * (trainset_size + valset_size)
        assert self.max_metric_calls is not None
        return self.max_metric_calls

    # --- compile --------------------------------------------------------------------------

    async def _compile(
        self, run: Run, student: Any, *, trainset: Sequence[Any], valset: Sequence[Any] | None = None,
        teacher: Any = None, **kwargs: Any,
    ) -> Any:
        del teacher, kwargs
        trainset = list(trainset)
        if not trainset:
            raise ConfigurationError("GEPA.compile needs a non-empty trainset")
        valset = list(valset) if valset else trainset
        program = student.deepcopy()
        names = [name for name, _ in program.named_predictors()]
        if not names:
            raise ConfigurationError("GEPA found no predictors in the program: nothing to optimize")
        budget = self.metric_budget(len(names), len(trainset), len(valset))
        log.info("GEPA: a budget of %d metric calls (%.1f full evaluations of the valset)",
                 budget, budget / len(valset))
        search = _Search(self, run, program, names, trainset, valset, budget)
        return await search.run()


class _Search:
    def __init__(
        self, owner: GEPA, run: Run, program: Any, names: list[str],
        trainset: list[Any], valset: list[Any], budget: int,
    ) -> None:
        self.owner = owner
        self.run_ = run
        self.program = program
        self.trainset = trainset
        self.valset = valset
        self.budget = budget
        self.pool = _Pool(names)
        self.seed = owner.seed if owner.seed is not None else 0
        self.best_outputs: dict[int, list[tuple[int, Any]]] = {}
        self.reflection_calls = 0

    async def run(self) -> Any:
        seed_instructions = {name: p.signature.instructions for name, p in self.program.named_predictors()}
        scores = await self.run_.step("gepa/val/seed", lambda: self._val_scores(seed_instructions))
        self._accept(seed_instructions, [None], scores)
        iteration = merge = 0
        while (remaining := self.budget - self.pool.metric_calls) >= 2 * self._minibatch_size():
            if self._merge_due():
                rng = random.Random(f"{self.seed}:gepa:merge:{merge}")
                record = await self.run_.step(f"gepa/merge/{merge}", lambda r=rng, a=remaining: self._try_merge(r, a))
                merge += 1
                self._apply(record)
                if record["kind"] == "out-of-budget":
                    break
                continue
            records = await self._batch(iteration, remaining)
            for record in records:
                self._apply(record)
            iteration += len(records)
            if any(record["kind"] == "out-of-budget" for record in records):
                break
        log.info("GEPA: %d candidates, %d metric calls of %d, %d reflection calls",
                 len(self.pool.instructions), self.pool.metric_calls, self.budget, self.reflection_calls)
        return self._result()

    async def _batch(self, first: int, remaining: int) -> list[dict[str, Any]]:
        """Up to ``num_parallel_proposals`` iterations at once, in two phases, each against
        the pool as it was when the batch began: every iteration proposes a child and
        scores it on its minibatch; then the children that beat their parents are scored
        on the valset, in iteration order while the budget lasts. Records come back in
        iteration order, so the result does not depend on which work finishes first."""
        width = max(1, min(self.owner.num_parallel_proposals, remaining // (2 * self._minibatch_size())))
        proposals = await gather_settled(
            self.run_.step(f"gepa/iteration/{first + k}", lambda i=first + k: self._propose_child(i))
            for k in range(width)
        )
        left = remaining - sum(int(p["calls"]) for p in proposals)
        scored: list[int] = []
        for k, proposal in enumerate(proposals):
            if proposal["kind"] != "improved":
                continue
            if left < len(self.valset):
                proposals[k] = {**proposal, "kind": "out-of-budget"}
                continue
            left -= len(self.valset)
            scored.append(k)
        vals = await gather_settled(
            self.run_.step(f"gepa/val/{first + k}", lambda c=proposals[k]["child"]: self._val_scores(c))
            for k in scored
        )
        for k, val in zip(scored, vals, strict=True):
            proposals[k] = {**proposals[k], "kind": "accepted", "val_scores": val,
                            "calls": int(proposals[k]["calls"]) + len(self.valset)}
        return proposals

    # --- one iteration's proposal (a durable step: returns a plain record) -------------------

    async def _propose_child(self, iteration: int) -> dict[str, Any]:
        """Reflect on a parent's minibatch and score the child there (2 minibatches of calls
        at most): ``improved`` when it beats the parent, else why not."""
        rng = random.Random(f"{self.seed}:gepa:{iteration}")
        pool = self.pool
        parent = self._select_parent(rng)
        names = pool.names
        if self.owner.component_selector == "all":
            components = list(names)
        else:
            components = [names[pool.turns[parent] % len(names)]]
        batch = rng.sample(range(len(self.trainset)), min(self._minibatch_size(), len(self.trainset)))
        examples = [self.trainset[i] for i in batch]
        traced = await self._run_traced(pool.instructions[parent], examples, components)
        parent_scores = [t.score for t in traced]
        base: dict[str, Any] = {"parent": parent, "components": components, "batch": batch, "calls": len(examples)}
        if self.owner.skip_perfect_score and all(s >= self.owner.perfect_score for s in parent_scores):
            return {"kind": "skipped-perfect", **base}
        proposed = await self._propose(pool.instructions[parent], components, traced)
        child = {**pool.instructions[parent], **proposed}
        if child == pool.instructions[parent]:
            return {"kind": "unchanged", **base}
        child_scores = await self._scores(child, examples)
        base.update(calls=2 * len(examples), child=child, minibatch=[sum(parent_scores), sum(child_scores)])
        if sum(child_scores) <= sum(parent_scores):
            return {"kind": "rejected", **base}
        return {"kind": "improved", **base}

    async def _try_merge(self, rng: random.Random, allowance: int) -> dict[str, Any]:
        pool = self.pool
        frontier = sorted(pool.frontier())
        pairs = [
            (a, b) for i, a in enumerate(frontier) for b in frontier[i + 1 :]
            if (a, b) not in pool.tried_merges and a not in pool.ancestors(b) and b not in pool.ancestors(a)
            and pool.ancestors(a) & pool.ancestors(b)
        ]
        if not pairs:
            return {"kind": "merge-none", "pair": None, "calls": 0}
        a, b = rng.choice(pairs)
        ancestor = max(pool.ancestors(a) & pool.ancestors(b))
        merged: dict[str, str] = {}
        for name in pool.names:
            base_text, text_a, text_b = (pool.instructions[x][name] for x in (ancestor, a, b))
            if text_a == base_text:
                merged[name] = text_b
            elif text_b == base_text:
                merged[name] = text_a
            else:
                merged[name] = text_a if pool.mean(a) >= pool.mean(b) else text_b
        record: dict[str, Any] = {"kind": "merge-rejected", "pair": [a, b], "ancestor": ancestor, "calls": 0}
        if merged in (pool.instructions[a], pool.instructions[b]):
            record["kind"] = "merge-same"
            return record
        differ = [i for i in range(len(self.valset)) if pool.val_scores[a][i] != pool.val_scores[b][i]]
        subsample = rng.sample(differ, min(_MERGE_SUBSAMPLE, len(differ))) if differ else []
        if not subsample:
            record["kind"] = "merge-same"
            return record
        if allowance < len(subsample) + len(self.valset):
            record["kind"] = "out-of-budget"
            return record
        scores = await self._scores(merged, [self.valset[i] for i in subsample])
        record["calls"] = len(subsample)
        record["child"] = merged
        if sum(scores) < max(sum(pool.val_scores[x][i] for i in subsample) for x in (a, b)):
            return record
        val = await self._val_scores(merged)
        record.update(kind="merge-accepted", val_scores=val, calls=len(subsample) + len(self.valset))
        return record

    def _apply(self, record: dict[str, Any]) -> None:
        """Update the pool from an iteration's record (the same on a resumed run)."""
        pool = self.pool
        pool.metric_calls += int(record.get("calls", 0))
        kind = record["kind"]
        if kind.startswith("merge") or (kind == "out-of-budget" and "pair" in record):
            if record.get("pair") is not None:
                pool.tried_merges.add(tuple(record["pair"]))  # type: ignore[arg-type]
            pool.new_since_merge = False
            if kind == "merge-accepted":
                pool.merges += 1
                self._accept(record["child"], list(record["pair"]), record["val_scores"], counted=True)
            return
        parent = record["parent"]
        pool.turns[parent] += len(record["components"])
        if kind == "accepted":
            self._accept(record["child"], [parent], record["val_scores"], counted=True)
            pool.new_since_merge = True

    def _accept(self, instructions: dict[str, str], parents: list[int | None], scores: list[float],
                counted: bool = False) -> None:
        pool = self.pool
        if not counted:
            pool.metric_calls += len(self.valset)
        index = pool.add(instructions, parents, scores)
        score = round(100 * pool.mean(index), 2)
        # The frontier after this candidate joined: `dspex runs show` and the dashboard's trial
        # list show it growing, candidate by candidate.
        frontier = sorted(pool.frontier())
        params = {"parents": parents, "frontier": frontier, "instructions": instructions}
        self.run_.record_trial(index, params, score=score, kind="candidate")
        self.run_.offer(self._build(instructions), score, f"candidate {index}")
        log.info("GEPA: candidate %d (from %s) scores %.2f on the valset", index, parents, score)

    # --- choosing --------------------------------------------------------------------------

    def _select_parent(self, rng: random.Random) -> int:
        pool = self.pool
        if self.owner.candidate_selection_strategy == "current_best":
            return pool.best()
        frontier = pool.frontier()
        candidates = sorted(frontier)
        return rng.choices(candidates, weights=[frontier[c] for c in candidates])[0]

    def _merge_due(self) -> bool:
        pool = self.pool
        return self.owner.use_merge and pool.new_since_merge and pool.merges < self.owner.max_merge_invocations

    def _minibatch_size(self) -> int:
        return max(1, min(self.owner.reflection_minibatch_size, len(self.trainset)))

    # --- running the program -------------------------------------------------------------

    def _build(self, instructions: dict[str, str]) -> Any:
        candidate = self.program.deepcopy()
        for name, predictor in candidate.named_predictors():
            predictor.signature = predictor.signature.with_instructions(instructions[name])
        return candidate

    async def _val_scores(self, instructions: dict[str, str]) -> list[float]:
        candidate = self._build(instructions)
        result = await self.run_.evaluate(
            candidate, self.valset, _ScoreOnly(self.owner.metric, self.owner.failure_score),
            num_threads=self.owner.num_threads, max_errors=len(self.valset),
        )
        scores = [float(score) for _, _, score in result.results]
        if self.owner.track_best_outputs:
            index = len(self.pool.instructions)
            for i, (_, prediction, _) in enumerate(result.results):
                self.best_outputs.setdefault(i, []).append((index, prediction))
        return scores

    async def _scores(self, instructions: dict[str, str], examples: list[Any]) -> list[float]:
        traced = await self._run_traced(instructions, examples, [])
        return [t.score for t in traced]

    async def _run_traced(self, instructions: dict[str, str], examples: list[Any], components: list[str]) -> list[_Traced]:
        """Run the candidate on ``examples`` concurrently, here, keeping each run's trace and
        the metric's feedback for each of ``components``."""
        candidate = self._build(instructions)
        predictors = dict(candidate.named_predictors())
        limit = asyncio.Semaphore(self.owner.num_threads or int(settings.num_threads))

        async def one(example: Any) -> _Traced:
            async with limit:
                with settings.context(trace=[]):
                    try:
                        prediction = await candidate.acall(**example.inputs())
                    except BudgetExceededError:
                        raise  # the iteration must not be stored with runs the budget cut off
                    except Exception as exc:  # a failed run is data for the reflection step
                        note = _failure_feedback(exc, self.owner.add_format_failure_as_feedback)
                        return _Traced(example, None, [], self.owner.failure_score, dict.fromkeys(components, note))
                    trace = list(settings.trace)
            score, feedback = _split(await _call_metric(self.owner.metric, example, prediction, trace, None, None))
            notes: dict[str, str] = {}
            calls: dict[str, list[Any]] = {}
            for component in components:
                calls[component] = [t for t in trace if t[0] is predictors[component]]
                given = await _call_metric(self.owner.metric, example, prediction, trace, component, calls[component])
                part_score, part_feedback = _split(given)
                notes[component] = part_feedback or feedback or f"This run scored {part_score}."
            return _Traced(example, prediction, trace, score, notes, calls)

        return list(await asyncio.gather(*(one(e) for e in examples)))

    async def _propose(self, instructions: dict[str, str], components: list[str], traced: list[_Traced]) -> dict[str, str]:
        dataset = {c: [_reflective_row(t, c) for t in traced] for c in components}
        if self.owner.instruction_proposer is not None:
            proposed = self.owner.instruction_proposer(
                candidate=dict(instructions), reflective_dataset=dataset, components_to_update=components
            )
            if inspect.isawaitable(proposed):
                proposed = await proposed
            return {c: str(proposed[c]) for c in components if c in proposed}
        reflection = Predict(ProposeInstruction)
        reflection.lm = self.owner.reflection_lm or settings.lm
        out: dict[str, str] = {}
        for component in components:
            with settings.context(trace=[]):
                result = await reflection.acall(
                    current_instruction=instructions[component],
                    examples_with_feedback=_format_rows(dataset[component]),
                )
            self.reflection_calls += 1
            text = str(result.new_instruction or "").strip()
            if text:
                out[component] = text
        return out

    # --- the result ----------------------------------------------------------------------

    def _result(self) -> Any:
        pool = self.pool
        if not pool.instructions:
            raise SearchError("GEPA scored no candidate on the valset")
        best = pool.best()
        program = self._build(pool.instructions[best])
        if self.owner.track_stats:
            program.detailed_results = GEPAResult(
                candidates=[self._build(i) for i in pool.instructions],
                parents=[list(p) for p in pool.parents],
                val_aggregate_scores=[pool.mean(i) for i in range(len(pool.instructions))],
                val_subscores=[dict(enumerate(s)) for s in pool.val_scores],
                per_val_instance_best_candidates=pool.best_per_instance(),
                discovery_eval_counts=list(pool.found_at),
                total_metric_calls=pool.metric_calls,
                num_full_val_evals=pool.full_evals,
                seed=self.owner.seed,
                best_outputs_valset=self.best_outputs or None,
            )
        return program


@dataclass
class _Traced:
    example: Any
    prediction: Any
    trace: list[Any]
    score: float
    feedback: dict[str, str]
    calls: dict[str, list[Any]] = field(default_factory=dict)  # each component's own trace entries


class _ScoreOnly:
    """The GEPA metric as Evaluate calls a metric: ``(gold, pred, trace) -> score``."""

    def __init__(self, metric: Callable[..., Any], failure_score: float) -> None:
        self.metric = metric
        self.failure_score = failure_score

    def __call__(self, gold: Any, pred: Any, trace: Any = None) -> float:
        score, _ = _split(self.metric(gold, pred, trace, None, None))
        return score


async def _call_metric(metric: Callable[..., Any], *args: Any) -> Any:
    value = metric(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


def _split(value: Any) -> tuple[float, str | None]:
    """(score, feedback) from a metric's float or Prediction(score=, feedback=)."""
    if isinstance(value, Prediction | dict) or hasattr(value, "score"):
        score = value["score"] if isinstance(value, dict) else value.score
        feedback = value.get("feedback") if isinstance(value, dict | Prediction) else getattr(value, "feedback", None)
        return float(score), (str(feedback) if feedback else None)
    return float(value), None


def _failure_feedback(exc: BaseException, detailed: bool) -> str:
    if detailed:
        return f"The program failed on this input: {type(exc).__name__}: {exc}"
    return "The program failed on this input."


def _reflective_row(traced: _Traced, component: str) -> dict[str, Any]:
    """What the reflection step sees of one example: the component's last call (its
    inputs and outputs) and the feedback, or the program's inputs when it failed first."""
    own = traced.calls.get(component) or []
    if own:
        inputs, outputs = dict(own[-1][1]), _outputs(own[-1][2])
    else:
        inputs, outputs = dict(traced.example.inputs()), "(the program failed before this step answered)"
    return {"Inputs": inputs, "Generated Outputs": outputs, "Feedback": traced.feedback.get(component, "")}


def _outputs(prediction: Any) -> dict[str, Any]:
    to_dict = getattr(prediction, "toDict", None)
    return dict(to_dict()) if callable(to_dict) else {"output": prediction}


def _format_rows(rows: list[dict[str, Any]]) -> str:
    blocks = []
    for number, row in enumerate(rows, start=1):
        lines = [f"### Example {number}", "Inputs:"]
        lines += [f"- {k}: {_short(v)}" for k, v in row["Inputs"].items()]
        outputs = row["Generated Outputs"]
        lines.append("Generated outputs:")
        lines += [f"- {k}: {_short(v)}" for k, v in outputs.items()] if isinstance(outputs, dict) else [f"- {outputs}"]
        lines.append("Feedback: " + " ".join(str(row["Feedback"]).split()))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _short(value: Any, limit: int = 1500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


__all__ = ["GEPA", "GEPAResult", "ProposeInstruction"]
