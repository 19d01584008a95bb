"""Primitives: Example, Prediction, Module, Parameter and settings."""

from dspex.primitives.example import Example, InputKeysNotSetError
from dspex.primitives.module import Module, UsageCollector, collect_usage, record_usage
from dspex.primitives.parameter import Parameter
from dspex.primitives.prediction import Completions, MissingScoreError, Prediction
from dspex.primitives.saving import load
from dspex.primitives.settings import (
    Settings,
    SettingsContext,
    UnknownSettingError,
    configure,
    context,
    load_settings,
    record_trace,
    save_settings,
    settings,
)

__all__ = [
    "Completions",
    "Example",
    "InputKeysNotSetError",
    "MissingScoreError",
    "Module",
    "Parameter",
    "Prediction",
    "Settings",
    "SettingsContext",
    "UnknownSettingError",
    "UsageCollector",
    "collect_usage",
    "configure",
    "context",
    "load",
    "load_settings",
    "record_trace",
    "record_usage",
    "save_settings",
    "settings",
]
