"""dspex: DSPy's programming model on an Erlang/OTP-style runtime built on Ray.

Public names are imported on first use (PEP 562), so ``import dspex`` stays
fast and Ray, optuna and aiohttp load only when a program needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # signatures
    "Signature": "dspex.signatures.signature",
    "InputField": "dspex.signatures.field",
    "OutputField": "dspex.signatures.field",
    "make_signature": "dspex.signatures.signature",
    "ensure_signature": "dspex.signatures.signature",
    "infer_prefix": "dspex.signatures.field",
    # primitives
    "Example": "dspex.primitives.example",
    "Prediction": "dspex.primitives.prediction",
    "Completions": "dspex.primitives.prediction",
    "Module": "dspex.primitives.module",
    "Parameter": "dspex.primitives.parameter",
    "configure": "dspex.primitives.settings",
    "context": "dspex.primitives.settings",
    "settings": "dspex.primitives.settings",
    "load": "dspex.primitives.saving",
    "load_settings": "dspex.primitives.settings",
    "BaseCallback": "dspex.primitives.callbacks",
    "Assert": "dspex.primitives.assertions",
    "Suggest": "dspex.primitives.assertions",
    "assert_transform_module": "dspex.primitives.assertions",
    "backtrack_handler": "dspex.primitives.assertions",
    # adapters
    "Adapter": "dspex.adapters.base",
    "ChatAdapter": "dspex.adapters.chat",
    "JSONAdapter": "dspex.adapters.json_adapter",
    "XMLAdapter": "dspex.adapters.xml_adapter",
    # field types with their own prompt rendering
    "Type": "dspex.adapters.types",
    "Image": "dspex.adapters.types",
    "Audio": "dspex.adapters.types",
    "File": "dspex.adapters.types",
    "History": "dspex.adapters.types",
    "Code": "dspex.adapters.types",
    "Reasoning": "dspex.adapters.types",
    "Tool": "dspex.adapters.types",
    "ToolCalls": "dspex.adapters.types",
    "ToolCallResults": "dspex.adapters.types",
    # streaming and calling programs the other way round
    "streamify": "dspex.streaming.streamify",
    "asyncify": "dspex.utils.asyncify",
    "syncify": "dspex.utils.asyncify",
    # modules
    "Predict": "dspex.modules.predict",
    "ChainOfThought": "dspex.modules.chain_of_thought",
    "Parallel": "dspex.modules.parallel",
    "BestOfN": "dspex.modules.best_of_n",
    "Refine": "dspex.modules.refine",
    "MultiChainComparison": "dspex.modules.multi_chain_comparison",
    "ReAct": "dspex.modules.react",
    "ProgramOfThought": "dspex.modules.program_of_thought",
    "CodeAct": "dspex.modules.code_act",
    # LM client
    "LM": "dspex.clients.lm",
    "BaseLM": "dspex.clients.base_lm",
    "configure_cache": "dspex.clients.cache",
    "inspect_history": "dspex.clients.history",
    "track_usage": "dspex.clients.usage",
    "Usage": "dspex.clients.types",
    # evaluation
    "Evaluate": "dspex.evaluate.evaluate",
    "EvaluationResult": "dspex.evaluate.evaluate",
    "answer_exact_match": "dspex.evaluate.metrics",
    "answer_passage_match": "dspex.evaluate.metrics",
    # optimizers
    "LabeledFewShot": "dspex.optimizers.labeled",
    "BootstrapFewShot": "dspex.optimizers.bootstrap",
    "BootstrapFewShotWithRandomSearch": "dspex.optimizers.random_search",
    "BootstrapRS": "dspex.optimizers.random_search",
    "KNN": "dspex.optimizers.knn",
    "KNNFewShot": "dspex.optimizers.knn",
    "Embedder": "dspex.clients.embedding",
    # retrieval
    "Retrieve": "dspex.modules.retrieve",
    "ColBERTv2": "dspex.retrievers.colbertv2",
    "Ensemble": "dspex.optimizers.ensemble",
    "majority": "dspex.optimizers.ensemble",
    "COPRO": "dspex.optimizers.copro",
    "MIPROv2": "dspex.optimizers.mipro",
    "GEPA": "dspex.optimizers.gepa",
    "SIMBA": "dspex.optimizers.simba",
    "BootstrapFinetune": "dspex.optimizers.finetune",
    # runtime
    "runs": "dspex.runtime.runs",
    "init": "dspex.runtime",
    "shutdown": "dspex.runtime",
    "status": "dspex.runtime",
    "serve": "dspex.runtime.serve",
    "get_service": "dspex.runtime.serve",
    "dead_letters": "dspex.runtime.supervision.application",
    # errors
    "DspexError": "dspex.errors",
    "SignatureError": "dspex.errors",
    "SignatureTypeError": "dspex.errors",
    "AdapterParseError": "dspex.errors",
    "ConfigurationError": "dspex.errors",
    "SavedFileError": "dspex.errors",
    "PickleNotAllowedError": "dspex.errors",
    "StateMismatchError": "dspex.errors",
    "SettingsOwnerError": "dspex.errors",
    "InputError": "dspex.errors",
    "MediaError": "dspex.errors",
    "LMError": "dspex.errors",
    "EvaluationError": "dspex.errors",
    "ParallelExecutionError": "dspex.errors",
    "ToolError": "dspex.errors",
    "AssertionFailedError": "dspex.errors",
    "FinetuneError": "dspex.errors",
    "FinetuneNotSupportedError": "dspex.errors",
    "CodeRepairError": "dspex.errors",
    "ToolArgumentError": "dspex.errors",
    "BudgetExceededError": "dspex.errors",
    "CircuitOpenError": "dspex.errors",
    "LMFallbackExhaustedError": "dspex.errors",
    # the Python sandbox
    "PythonInterpreter": "dspex.sandbox.interpreter",
    "FinalOutput": "dspex.sandbox.values",
    "CodeInterpreterError": "dspex.errors",
    "CodeExecutionError": "dspex.errors",
    "CodeSyntaxError": "dspex.errors",
    "InterpreterTimeoutError": "dspex.errors",
    "InterpreterCrashedError": "dspex.errors",
    "InterpreterUnavailableError": "dspex.errors",
    "SandboxInstallError": "dspex.errors",
}

__all__ = sorted([*_EXPORTS, "__version__", "cache"])


# Subpackages DSPy code reaches as attributes (``dspy.teleprompt.COPRO``) without
# importing them first.
_SUBPACKAGES = frozenset(
    {
        "adapters",
        "clients",
        "evaluate",
        "experimental",
        "predict",
        "primitives",
        "privacy",
        "retrievers",
        "signatures",
        "streaming",
        "teleprompt",
        "utils",
    }
)


def __getattr__(name: str) -> Any:
    if name == "cache":  # the process-wide LM cache, as ``dspy.cache``: looked up each time,
        from dspex.clients.cache import get_cache  # since configure_cache() replaces it

        return get_cache()
    if name in _SUBPACKAGES:
        return importlib.import_module(f"dspex.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from dspex.adapters.base import Adapter
    from dspex.adapters.chat import ChatAdapter
    from dspex.adapters.json_adapter import JSONAdapter
    from dspex.adapters.types import (
        Audio,
        Code,
        File,
        History,
        Image,
        Reasoning,
        Tool,
        ToolCallResults,
        ToolCalls,
        Type,
    )
    from dspex.adapters.xml_adapter import XMLAdapter
    from dspex.clients.base_lm import BaseLM
    from dspex.clients.cache import configure_cache
    from dspex.clients.embedding import Embedder
    from dspex.clients.history import inspect_history
    from dspex.clients.lm import LM
    from dspex.clients.types import Usage
    from dspex.clients.usage import track_usage
    from dspex.errors import (
        AdapterParseError,
        BudgetExceededError,
        CircuitOpenError,
        CodeExecutionError,
        CodeInterpreterError,
        CodeSyntaxError,
        ConfigurationError,
        DspexError,
        EvaluationError,
        InputError,
        InterpreterCrashedError,
        InterpreterTimeoutError,
        InterpreterUnavailableError,
        LMError,
        LMFallbackExhaustedError,
        MediaError,
        ParallelExecutionError,
        PickleNotAllowedError,
        SandboxInstallError,
        SavedFileError,
        SettingsOwnerError,
        SignatureError,
        SignatureTypeError,
        StateMismatchError,
        ToolArgumentError,
        ToolError,
    )
    from dspex.evaluate.evaluate import Evaluate, EvaluationResult
    from dspex.evaluate.metrics import answer_exact_match, answer_passage_match
    from dspex.modules.best_of_n import BestOfN
    from dspex.modules.chain_of_thought import ChainOfThought
    from dspex.modules.multi_chain_comparison import MultiChainComparison
    from dspex.modules.parallel import Parallel
    from dspex.modules.predict import Predict
    from dspex.modules.react import ReAct
    from dspex.modules.refine import Refine
    from dspex.modules.retrieve import Retrieve
    from dspex.optimizers.bootstrap import BootstrapFewShot
    from dspex.optimizers.copro import COPRO
    from dspex.optimizers.ensemble import Ensemble, majority
    from dspex.optimizers.knn import KNN, KNNFewShot
    from dspex.optimizers.labeled import LabeledFewShot
    from dspex.optimizers.mipro import MIPROv2
    from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch, BootstrapRS
    from dspex.primitives.callbacks import BaseCallback
    from dspex.primitives.example import Example
    from dspex.primitives.module import Module
    from dspex.primitives.parameter import Parameter
    from dspex.primitives.prediction import Completions, Prediction
    from dspex.primitives.saving import load
    from dspex.primitives.settings import configure, context, load_settings, settings
    from dspex.retrievers.colbertv2 import ColBERTv2
    from dspex.runtime import init, shutdown, status
    from dspex.runtime.runs import runs
    from dspex.runtime.serve import get_service, serve
    from dspex.runtime.supervision.application import dead_letters
    from dspex.sandbox.interpreter import PythonInterpreter
    from dspex.sandbox.values import FinalOutput
    from dspex.signatures.field import InputField, OutputField, infer_prefix
    from dspex.signatures.signature import Signature, ensure_signature, make_signature
    from dspex.streaming.streamify import streamify
    from dspex.utils.asyncify import asyncify, syncify
