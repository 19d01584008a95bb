"""KNN and KNNFewShot: demos chosen per input from its nearest training examples.

`KNN(k, trainset, vectorizer)` finds the ``k`` trainset examples whose inputs
embed closest to a call's inputs. `KNNFewShot` compiles to a program that, on
every call, bootstraps demos (BootstrapFewShot) from those neighbours only and
then answers with them, as DSPy does. The LM work happens at inference, not
at compile time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.bootstrap import BootstrapFewShot, Limiter
from dspex.optimizers.embedders import Embedder, as_embedder
from dspex.optimizers.labeled import reject_unknown_options
from dspex.optimizers.run import Run
from dspex.primitives.module import Module

if TYPE_CHECKING:
    import numpy as np


class KNN:
    """The ``k`` nearest trainset examples to some inputs, by embedding similarity."""

    def __init__(self, k: int, trainset: Sequence[Any], vectorizer: Any = None) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigurationError(f"KNN(k=...) must be an int >= 1, got {k!r}")
        if not trainset:
            raise ConfigurationError("KNN needs a non-empty trainset to pick neighbours from")
        self.k = k
        self.trainset = list(trainset)
        self.embedder: Embedder = as_embedder(vectorizer)
        self._matrix: np.ndarray | None = None

    async def anearest(self, **inputs: Any) -> list[Any]:
        """The nearest examples, closest first."""
        import numpy as np

        matrix = await self._trainset_matrix()
        query = await self.embedder.aembed([describe(inputs)])
        scores = matrix @ query[0]
        # A stable sort on -score: equal scores keep trainset order, so ties are reproducible.
        order = np.argsort(-scores, kind="stable")[: self.k]
        return [self.trainset[int(i)] for i in order]

    def __call__(self, **inputs: Any) -> list[Any]:
        from dspex.utils.aio import run_sync

        return run_sync(self.anearest(**inputs))

    @property
    def trainset_vectors(self) -> np.ndarray:
        """The trainset's embeddings, one row per example (embedded on first use)."""
        from dspex.utils.aio import run_sync

        return run_sync(self._trainset_matrix())

    async def _trainset_matrix(self) -> np.ndarray:
        # Embedded once, on first use. Two first calls at once may both embed;
        # the results are identical, so that costs time, never correctness.
        if self._matrix is None:
            texts = [describe(example_inputs(example)) for example in self.trainset]
            self._matrix = await self.embedder.aembed(texts)
        return self._matrix

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_matrix"] = None  # cheap to rebuild, large to ship
        return state


def describe(fields: dict[str, Any]) -> str:
    """The text embedded for a set of inputs: ``"question: ... | context: ..."``."""
    return " | ".join(f"{key}: {value}" for key, value in fields.items())


def example_inputs(example: Any) -> dict[str, Any]:
    try:
        return dict(example.inputs().items())
    except (AttributeError, ValueError) as exc:
        raise ConfigurationError(
            "KNN trainset examples need input fields: build them with Example(...).with_inputs(...)"
        ) from exc


class KNNFewShot(Teleprompter):
    """Per-call demos bootstrapped from the ``k`` nearest training examples (DSPy-compatible)."""

    def __init__(self, k: int, trainset: Sequence[Any], vectorizer: Any = None, **few_shot_bootstrap_args: Any) -> None:
        self.knn = KNN(k, trainset, vectorizer)
        self.KNN = self.knn  # DSPy's attribute name
        self.k = k
        self.trainset = list(trainset)
        # Builds the BootstrapFewShot now, so a wrong argument fails here, not at inference.
        try:
            BootstrapFewShot(**few_shot_bootstrap_args)
        except TypeError as exc:
            raise ConfigurationError(f"KNNFewShot: bad BootstrapFewShot argument: {exc}") from exc
        self.few_shot_bootstrap_args = dict(few_shot_bootstrap_args)

    def compile(self, student: Any, *, teacher: Any = None, trainset: Sequence[Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().compile(student, trainset=trainset or self.trainset, teacher=teacher, **kwargs)

    async def acompile(self, student: Any, *, teacher: Any = None, trainset: Sequence[Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return await super().acompile(student, trainset=trainset or self.trainset, teacher=teacher, **kwargs)

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        teacher: Any = None,
        **kwargs: Any,
    ) -> Any:
        reject_unknown_options(type(self).__name__, kwargs)
        return KNNFewShotProgram(student, self.knn, self.few_shot_bootstrap_args, teacher)


class KNNFewShotProgram(Module):
    """What `KNNFewShot` compiles to: bootstrap from the neighbours, then answer."""

    def __init__(self, student: Any, knn: KNN, bootstrap_args: dict[str, Any], teacher: Any = None) -> None:
        super().__init__()
        self.program = student.reset_copy()
        self.knn = knn
        self.bootstrap_args = dict(bootstrap_args)
        # Held in a box: the parameter walk must not count the teacher's predictors as ours.
        self.teacher = _Box(teacher.deepcopy() if teacher is not None else None)

    async def aforward(self, **inputs: Any) -> Any:
        neighbours = await self.knn.anearest(**inputs)
        compiled = await self.compile_for(neighbours)
        return await compiled.acall(**inputs)

    async def compile_for(self, neighbours: list[Any]) -> Any:
        """The student bootstrapped on ``neighbours`` (no run: nothing to checkpoint per call)."""
        bootstrapper = BootstrapFewShot(**self.bootstrap_args)
        limiter = Limiter(max(1, len(neighbours)))
        return await bootstrapper.build(self.program, trainset=neighbours, teacher=self.teacher.value, limiter=limiter)


class _Box:
    """Holds a value out of sight of `Module.named_parameters()`."""

    def __init__(self, value: Any) -> None:
        self.value = value


__all__ = ["KNN", "KNNFewShot", "KNNFewShotProgram"]
