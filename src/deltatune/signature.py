"""A DeltaModel whose ``forward`` signature shows the wrapped model's parameters.

Tools decide what to feed a model by reading its ``forward`` signature: ``transformers.Trainer``
keeps only the dataset columns that ``forward`` names and takes as labels the parameters that say
"label" (or ``start_positions``/``end_positions`` for a ``...QuestionAnswering`` class). A generic
``forward(*args, **kwargs)`` would make it drop every column. So each wrapped model class gets one
DeltaModel subclass (made once, cached) whose ``forward`` carries the base signature plus
``adapter_names``; the behaviour is DeltaModel's own. Pickling goes through :func:`_rebuild`, since
the subclass is not importable by name.
"""

from __future__ import annotations

import inspect
from typing import Any

_CLASSES: dict[tuple[type, type], type] = {}


def typed_class(cls: type, base_cls: type) -> type:
    """``cls`` (DeltaModel) specialised to wrap ``base_cls``: same behaviour, ``base_cls``'s forward signature."""
    key = (cls, base_cls)
    if key not in _CLASSES:
        _CLASSES[key] = _make(cls, base_cls)
    return _CLASSES[key]


def _make(cls: type, base_cls: type) -> type:
    try:
        base_sig = inspect.signature(getattr(base_cls, "forward"))  # noqa: B009
    except (TypeError, ValueError):  # a builtin or C forward: keep the generic signature
        return cls
    params = list(base_sig.parameters.values())
    if "adapter_names" in (p.name for p in params):
        return cls
    adapter_names = inspect.Parameter("adapter_names", inspect.Parameter.KEYWORD_ONLY, default=None)
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    try:
        signature = base_sig.replace(parameters=[*rest, adapter_names, *var_kw], return_annotation=Any)
    except ValueError:
        return cls
    generic_forward = getattr(cls, "forward")  # noqa: B009

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return generic_forward(self, *args, **kwargs)

    forward.__signature__ = signature  # type: ignore[attr-defined]
    forward.__doc__ = generic_forward.__doc__

    def __reduce_ex__(self: Any, protocol: Any) -> Any:  # noqa: N807
        return _rebuild, (cls, base_cls), self.__dict__

    # The name carries the base class's: Trainer looks for "QuestionAnswering" in it to find the labels.
    name = f"{cls.__name__}[{base_cls.__name__}]"
    body = {"forward": forward, "__reduce_ex__": __reduce_ex__, "__module__": cls.__module__, "__qualname__": name}
    return type(name, (cls,), body)


def _rebuild(cls: type, base_cls: type) -> Any:
    return object.__new__(typed_class(cls, base_cls))
