"""Errors a user can cause. Each message says what was wrong and how to fix it."""

from __future__ import annotations


class DeltatuneError(Exception):
    """Base class of every error deltatune raises on purpose."""


class ConfigError(DeltatuneError, ValueError):
    """An adapter config is invalid or cannot be applied to this model."""


class TargetError(ConfigError):
    """A config selects no module, or names a module the model does not have."""


class AdapterNameError(DeltatuneError, ValueError):
    """An adapter name is invalid, already taken, or unknown."""


class CheckpointError(DeltatuneError):
    """An adapter checkpoint is missing, malformed, or does not fit the model."""


class MergeError(DeltatuneError):
    """A merge or unmerge was refused (non-finite weights, unsupported layer, wrong state)."""


class UnsupportedLayerError(ConfigError):
    """A method was asked to adapt a layer type it does not support."""
