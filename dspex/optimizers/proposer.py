"""The grounded instruction proposer: LM-written instruction candidates for each predictor.

A proposal is grounded in what the prompt model can be told about the task:

* a dataset summary (data-aware): observations on batches of trainset examples,
  then one summary of those observations;
* the program (program-aware): its source or the outline of its predictors, an
  LM-written description of the program and of each predictor's role in it;
* a few demos of the predictor (few-shot-aware) and a random tip (tip-aware).

Where DSPy works through these one call at a time, here everything that does
not depend on an earlier answer runs at once: the observation batches, the
program description next to the dataset summary, every module description,
and every proposal of every predictor. Each LM call is a durable step when a
run is given, so a resumed optimization does not pay for it twice.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from dspex.errors import AdapterParseError, LMError
from dspex.optimizers.scoring import gather_all
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature

T = TypeVar("T")
log = logging.getLogger("dspex.optimizers")

#: Prompting tips, one of which a tip-aware proposal follows.
TIPS: dict[str, str] = {
    "none": "No particular tip: write the instruction you think works best.",
    "specific": "Be specific about the exact form the output must take.",
    "stepwise": "Spell out the steps a careful solver would follow, in order.",
    "pitfalls": "Name the mistakes that are easy to make on this task and how to avoid them.",
    "brief": "Keep it short: one or two sentences that say what matters most.",
    "expert": "Open by casting the model as an expert in the subject of the task.",
    "stakes": "Stress that every answer is checked and that accuracy matters more than speed.",
    "patterns": "Draw on the patterns the examples show, without copying any of them.",
}

_MAX_SOURCE_CHARS = 4000
_MAX_VALUE_CHARS = 400


# --- signatures of the prompt model's steps ------------------------------------


class ObserveData(Signature):
    """Study a batch of examples taken from a dataset. Write down short, factual observations
    about what they share: the subject matter, the form of the inputs and of the outputs,
    the style, and how hard the examples are."""

    examples: str = InputField(desc="examples from the dataset, one block per example")
    observations: str = OutputField(desc="a few short factual observations about the examples")


class SummarizeData(Signature):
    """Condense notes taken on several batches of a dataset into a brief description of the
    task the dataset poses and of what a good output looks like."""

    observations: str = InputField(desc="notes taken on batches of examples")
    summary: str = OutputField(desc="two or three sentences describing the dataset and its task")


class DescribeProgram(Signature):
    """Explain what a language-model program is for: the task it solves and how its steps work
    together to solve it."""

    program_code: str = InputField(desc="the program's code or an outline of its steps")
    program_example: str = InputField(
        desc="an input the program receives, with the expected output"
    )
    program_description: str = OutputField(desc="a short description of the task and the approach")


class DescribeModule(Signature):
    """Explain the role that one step of a language-model program plays in the whole program."""

    program_code: str = InputField(desc="the program's code or an outline of its steps")
    program_description: str = InputField(desc="what the program is for")
    module: str = InputField(desc="the step: its name, inputs and outputs")
    module_description: str = OutputField(desc="the step's job within the program")


class ProposeInstruction(Signature):
    """Write a new instruction for one step of a language-model program. A language model will
    read the instruction together with the step's inputs, so say clearly and specifically how
    to produce a good output for this task. Use the context given and follow the tip."""

    dataset_description: str = InputField(desc="what the task's data looks like")
    program_code: str = InputField(desc="the program's code or an outline of its steps")
    program_description: str = InputField(desc="what the program is for")
    module: str = InputField(desc="the step to write the instruction for: name, inputs, outputs")
    module_description: str = InputField(desc="the step's job within the program")
    task_demos: str = InputField(desc="worked examples of this step")
    basic_instruction: str = InputField(desc="the step's current instruction")
    tip: str = InputField(desc="advice to follow when writing the instruction")
    proposed_instruction: str = OutputField(desc="the new instruction for the step")


# --- steps: durable with a run, direct without ---------------------------------


class Steps(Protocol):
    async def step(self, key: str, fn: Callable[[], Awaitable[T]]) -> T: ...


class DirectSteps:
    """Runs each step at once: for using the proposer outside an optimization run."""

    async def step(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await fn()


@dataclass(frozen=True)
class ProposerSettings:
    program_aware: bool = True
    data_aware: bool = True
    tip_aware: bool = True
    fewshot_aware: bool = True
    view_data_batch_size: int = 10
    max_observation_batches: int = 5
    demos_in_context: int = 3
    temperature: float = 0.5


@dataclass(frozen=True)
class ProgramContext:
    code: str = ""
    description: str = ""
    modules: tuple[str, ...] = ()
    module_descriptions: tuple[str, ...] = ()


DemoCandidates = Sequence[Sequence[Sequence[Any]]]
"""``[predictor index][demo-set index] -> demos``."""


class GroundedProposer:
    """Proposes ``n`` instructions per predictor; the first is the predictor's own."""

    def __init__(
        self,
        prompt_model: Any = None,
        *,
        settings: ProposerSettings | None = None,
        seed: int = 0,
        steps: Steps | None = None,
        key_prefix: str = "propose",
    ) -> None:
        self.prompt_model = prompt_model
        self.settings = settings or ProposerSettings()
        self.seed = seed
        self.steps: Steps = steps or DirectSteps()
        self.prefix = key_prefix
        self.failures: list[str] = []

    # --- the whole program ----------------------------------------------------

    async def propose_instructions(
        self,
        program: Any,
        trainset: Sequence[Any],
        n: int,
        demo_candidates: DemoCandidates | None = None,
        grounding: tuple[str, ProgramContext] | None = None,
    ) -> list[list[str]]:
        """``[predictor index] -> [original instruction, proposal 1, ...]`` (at most ``n`` each).

        ``grounding`` is what `ground` returned, for callers that started it early.
        """
        summary, context = grounding or await self.ground(program, trainset)
        predictors = [p for _, p in program.named_predictors()]
        jobs = [
            self._proposal(program, trainset, i, j, summary, context, demo_candidates)
            for i in range(len(predictors))
            for j in range(1, n)
        ]
        proposals = iter(await gather_all(jobs))
        candidates: list[list[str]] = []
        for predictor in predictors:
            found = [next(proposals) for _ in range(1, n)]
            own = predictor.signature.instructions
            candidates.append([own, *(text for text in found if text)])
        return candidates

    # --- grounding ---------------------------------------------------------------

    async def ground(self, program: Any, trainset: Sequence[Any]) -> tuple[str, ProgramContext]:
        """The dataset summary and program description; neither needs the demo sets."""
        summary, context = await gather_all(
            [self.dataset_summary(trainset), self.program_context(program, trainset)]
        )
        return summary, context

    async def dataset_summary(self, trainset: Sequence[Any]) -> str:
        """Observations on batches of examples (concurrently), then one summary of them."""
        if not self.settings.data_aware or not trainset:
            return ""
        batches = self._observation_batches(trainset)
        notes = await gather_all(
            [
                self._ask(f"observe/{b}", ObserveData, examples=render_examples(batch))
                for b, batch in enumerate(batches)
            ]
        )
        joined = "\n\n".join(
            f"Batch {b + 1}: {_flat(note.observations, 1500)}" for b, note in enumerate(notes)
        )
        summary = await self._ask("summary", SummarizeData, observations=joined)
        return _flat(summary.summary, 1500)

    async def program_context(self, program: Any, trainset: Sequence[Any]) -> ProgramContext:
        modules = tuple(describe_predictor(name, p) for name, p in program.named_predictors())
        if not self.settings.program_aware:
            return ProgramContext(modules=modules)
        code = program_source(program)
        example = render_examples(list(trainset[:1])) if trainset else "(no example available)"
        described = await self._ask(
            "program", DescribeProgram, program_code=code, program_example=example
        )
        description = _flat(described.program_description, 1500)
        roles = await gather_all(
            [
                self._ask(
                    f"module/{i}",
                    DescribeModule,
                    program_code=code,
                    program_description=description,
                    module=module,
                )
                for i, module in enumerate(modules)
            ]
        )
        return ProgramContext(
            code=code,
            description=description,
            modules=modules,
            module_descriptions=tuple(_flat(r.module_description, 1500) for r in roles),
        )

    # --- one proposal -------------------------------------------------------------

    async def _proposal(
        self,
        program: Any,
        trainset: Sequence[Any],
        index: int,
        number: int,
        summary: str,
        context: ProgramContext,
        demo_candidates: DemoCandidates | None,
    ) -> str | None:
        rng = random.Random(f"{self.seed}:proposal:{index}:{number}")
        predictor = program.named_predictors()[index][1]
        inputs = {
            "dataset_description": summary,
            "program_code": context.code,
            "program_description": context.description,
            "module": context.modules[index],
            "module_description": context.module_descriptions[index]
            if context.module_descriptions
            else "",
            "task_demos": render_examples(
                self._demos_for(trainset, index, number, demo_candidates, rng)
            ),
            "basic_instruction": predictor.signature.instructions,
            "tip": TIPS[rng.choice(sorted(TIPS))],
        }
        signature = proposal_signature(self.settings)
        inputs = {k: v or "(none)" for k, v in inputs.items() if k in signature.input_fields}
        # A small per-proposal change of temperature makes each request distinct,
        # so proposals sharing a prompt are still different samples (and cache entries).
        temperature = self.settings.temperature + rng.uniform(0.01, 0.05)
        try:
            result = await self._ask(
                f"instruction/{index}/{number}", signature, temperature, **inputs
            )
        except (AdapterParseError, LMError) as exc:
            # One unusable proposal only narrows the search; it is logged and
            # listed in `failures`, and a resumed run asks again.
            message = f"proposal {number} for predictor {index} failed: {type(exc).__name__}: {exc}"
            log.warning("%s", message)
            self.failures.append(message)
            return None
        return str(result.proposed_instruction).strip() or None

    def _demos_for(
        self,
        trainset: Sequence[Any],
        index: int,
        number: int,
        demo_candidates: DemoCandidates | None,
        rng: random.Random,
    ) -> list[Any]:
        """The demos shown with proposal ``number``: its demo set, else labeled examples."""
        count = self.settings.demos_in_context
        if not self.settings.fewshot_aware or count <= 0:
            return []
        sets = [list(s) for s in (demo_candidates[index] if demo_candidates else []) if s]
        if sets:
            return sets[number % len(sets)][:count]
        return rng.sample(list(trainset), min(count, len(trainset)))

    def _observation_batches(self, trainset: Sequence[Any]) -> list[list[Any]]:
        size = max(self.settings.view_data_batch_size, 1)
        shuffled = list(trainset)
        random.Random(f"{self.seed}:data").shuffle(shuffled)
        shuffled = shuffled[: size * max(self.settings.max_observation_batches, 1)]
        return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]

    async def _ask(
        self, key: str, signature: Any, temperature: float | None = None, **inputs: Any
    ) -> Any:
        """One prompt-model call as the durable step ``<prefix>/<key>``."""
        from dspex.modules.predict import Predict

        config = {} if temperature is None else {"temperature": temperature}

        async def call() -> dict[str, Any]:
            prediction = await Predict(signature).acall(
                lm=self.prompt_model, config=config, **inputs
            )
            # Plain values only: a step's result is pickled into the run store.
            return {name: prediction.get(name) for name in signature.output_fields}

        values = await self.steps.step(f"{self.prefix}/{key}", call)
        return _Answer(values)


class _Answer:
    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


# --- rendering ------------------------------------------------------------------


def proposal_signature(settings: ProposerSettings) -> Any:
    """`ProposeInstruction` without the inputs that the settings switch off."""
    dropped: list[str] = []
    if not settings.data_aware:
        dropped.append("dataset_description")
    if not settings.program_aware:
        dropped += ["program_code", "program_description", "module_description"]
    if not settings.fewshot_aware:
        dropped.append("task_demos")
    if not settings.tip_aware:
        dropped.append("tip")
    signature: Any = ProposeInstruction
    for name in dropped:
        signature = signature.delete(name)
    return signature


def render_examples(examples: Sequence[Any], *, max_chars: int = _MAX_VALUE_CHARS) -> str:
    """Examples as ``Example N:`` blocks of ``field: value`` lines.

    Values are flattened to one line, so no block is ever just an input value
    on its own: a model (or the simulated LM) reads them as examples, not as
    the question it is asked.
    """
    blocks = []
    for number, example in enumerate(examples, 1):
        lines = [f"Example {number}:"]
        lines += [f"{k}: {_flat(v, max_chars)}" for k, v in _fields(example).items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def describe_predictor(name: str, predictor: Any) -> str:
    signature = predictor.signature
    inputs = ", ".join(signature.input_fields)
    outputs = ", ".join(signature.output_fields)
    return f"{name}: ({inputs}) -> ({outputs})"


def program_outline(program: Any) -> str:
    lines = [f"Program {type(program).__name__}, steps in order:"]
    for name, predictor in program.named_predictors():
        lines.append(f"- {describe_predictor(name, predictor)}")
        lines.append(f"  instruction: {_flat(predictor.signature.instructions, 300)}")
    return "\n".join(lines)


def program_source(program: Any) -> str:
    """The user's program class source plus the predictor outline; just the outline
    for dspex's own modules (their library source says nothing about the task)."""
    outline = program_outline(program)
    cls = type(program)
    if cls.__module__.startswith("dspex."):
        return outline
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return outline
    return f"{source.strip()[:_MAX_SOURCE_CHARS]}\n\n{outline}"


def _fields(example: Any) -> dict[str, Any]:
    items = getattr(example, "items", None)
    values = dict(items()) if callable(items) else dict(example)
    return {k: v for k, v in values.items() if not k.startswith("dspy_") and k != "augmented"}


def _flat(value: Any, limit: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "TIPS",
    "DirectSteps",
    "GroundedProposer",
    "ProgramContext",
    "ProposerSettings",
    "Steps",
    "describe_predictor",
    "program_outline",
    "program_source",
    "proposal_signature",
    "render_examples",
]
