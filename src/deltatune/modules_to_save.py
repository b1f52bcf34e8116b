"""ModulesToSave: a module trained in full, one copy per adapter (e.g. a classification head).

The original stays as ``original_module``; each adapter owns a trainable copy in
``modules_to_save[name]`` (PEFT's layout, so checkpoint keys match). The first active adapter
that has a copy serves the forward; disabled adapters use the original.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.layer import Routing, Runtime


class ModulesToSave(nn.Module):
    def __init__(self, original_module: nn.Module, runtime: Runtime) -> None:
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self._runtime = runtime

    def add(self, name: str) -> nn.Module:
        clone = copy.deepcopy(self.original_module)
        self.modules_to_save[name] = clone
        return clone

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("original_module", "modules_to_save"):
                raise
            return getattr(self._modules["original_module"], name)

    def current(self) -> nn.Module:
        rt = self._runtime
        if not rt.disabled:
            for name in rt.active:
                module = self.modules_to_save._modules.get(name)
                if module is not None:
                    return module
        return self.original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        routing = self._runtime.routing
        if routing is not None and not self._runtime.disabled:
            return self._mixed(routing, args, kwargs)
        return self.current()(*args, **kwargs)

    def _mixed(self, routing: Routing, args: tuple, kwargs: dict) -> Any:
        x = args[0]
        index = routing.index_for(x.shape[0], x.device)
        out: torch.Tensor | None = None
        for position, name in enumerate(routing.names):
            rows = (index == position).nonzero().flatten()
            if rows.numel() == 0:
                continue
            module = self.modules_to_save._modules.get(name, self.original_module)
            part = module(x[rows], *args[1:], **kwargs)
            if not isinstance(part, torch.Tensor):
                raise DeltatuneError(
                    f"Mixed batches support modules_to_save that return a tensor; "
                    f"{type(self.original_module).__name__} returned {type(part).__name__}."
                )
            if out is None:
                out = part.new_empty((x.shape[0], *part.shape[1:]))
            out = out.index_copy(0, rows, part)
        assert out is not None
        return out
