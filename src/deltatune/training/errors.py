"""Errors a recipe or a training run can raise. Each names what was wrong and the fix."""

from __future__ import annotations

from deltatune.errors import ConfigError, DeltatuneError


class RecipeError(ConfigError):
    """A recipe has an unknown key, a value of the wrong type, or an impossible combination."""


class DataError(DeltatuneError):
    """A data file is missing, unreadable, or has a row without the fields the task needs."""


class ModelPathError(DeltatuneError):
    """The model named by a recipe cannot be found."""


class RunFolderError(DeltatuneError):
    """The output folder holds another run, or a run that cannot be resumed."""
