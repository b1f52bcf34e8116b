"""Adapter methods. Importing this package registers every built-in method."""

from deltatune.methods import lora  # noqa: F401
