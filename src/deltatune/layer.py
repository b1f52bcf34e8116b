"""AdaptedLayer: wraps one base module and runs the adapters living on it.

The protocol between a layer and its adapters is one call: ``adapter(x, inner)`` where ``inner``
computes the layer below (the base module, or the adapters stacked under this one). An additive
method returns ``inner(x) + delta(x)``; a method that scales the input returns
``inner(x * s)``; a method that edits the weight calls the base functionally. Merging goes
through ``merge_into`` / ``unmerge_from`` on the canonical weight (see ``weights.py``), or, for
methods that change more than that weight, through the adapter's own ``merge_module`` hook.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import DeltatuneError, MergeError

BASE = "__base__"  # the name that means "no adapter" in a mixed batch


@dataclass
class Routing:
    """Per-sample adapter choice for one forward: ``names[index[i]]`` serves sample ``i``."""

    names: tuple[str, ...]
    index: torch.Tensor  # (batch,) long, positions into ``names``
    _expanded: dict[tuple[int, torch.device], torch.Tensor] = field(default_factory=dict)

    def index_for(self, batch: int, device: torch.device) -> torch.Tensor:
        """The index for a batch of ``batch`` rows (beam search repeats each sample k times)."""
        key = (batch, device)
        if key not in self._expanded:
            n = self.index.shape[0]
            if batch % n:
                raise DeltatuneError(
                    f"adapter_names has {n} entries but a layer saw a batch of {batch}; "
                    "pass one adapter name per sample of the batch."
                )
            self._expanded[key] = self.index.repeat_interleave(batch // n).to(device)
        return self._expanded[key]


@dataclass
class Runtime:
    """State shared by a DeltaModel and all its layers, so switching is O(1), not O(layers)."""

    active: tuple[str, ...] = ()
    disabled: bool = False
    routing: Routing | None = None


class Adapter(nn.Module):
    """One adapter of one method on one base layer.

    Subclasses implement ``forward(x, inner)`` and, when mergeable, ``delta_weight()`` (or
    ``merge_into``/``unmerge_from`` for methods that are not additive). Their ``state_dict``
    keys are the parameter names PEFT uses in checkpoints (e.g. ``lora_A.weight``).
    """

    # Combines several adapters of this class in one op for a mixed batch:
    # (adapters aligned with Routing.names, None where absent; per-sample index; x; base output;
    #  base=the base module, for methods that read its weight, e.g. DoRA)
    mixed_forward: ClassVar[Callable[..., torch.Tensor] | None] = None
    # Methods that read the base weight in forward (DoRA's norm, OFT on convolutions) set this
    # and receive ``base=<the base module>``; they must not keep it between calls.
    needs_base: ClassVar[bool] = False
    # Methods that need the rest of the base module's call (the adaption prompt reads an attention
    # module's ``position_embeddings``) set this and receive ``base=``, ``args=`` and ``kwargs=``
    # (the call's arguments after the input); they must not keep them between calls.
    needs_call_args: ClassVar[bool] = False
    # Set by methods whose forward is ``inner(x) + g(x)`` with ``g`` not reading the layers below,
    # and whose merge adds a ``delta_weight()`` that does not read the weight (LoRA, LoHa, ...).
    # Such adapters commute, so they merge in any order; an adapter that scales, rotates or
    # renormalises (IA3, OFT, DoRA) must keep its place in the activation order when merged.
    additive: ClassVar[bool] = False
    # Set by methods whose forward reads the stored base weight while acting on the output of
    # the adapters below them (DoRA's norm): merging such an adapter, or one below it, changes
    # what it computes, so that is refused while unmerged adapters are active below it.
    reads_stored_weight: ClassVar[bool] = False

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The change to the base weight, in canonical layout (see weights.py)."""
        raise MergeError(f"{type(self).__name__} cannot be merged into the base weights.")

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta_weight().to(weight.dtype)

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        return weight - self.delta_weight().to(weight.dtype)

    # Methods whose output change reaches the base bias (IA3 scales the whole output) edit it too;
    # the others return the bias they were given, the same object, and the bias is not written.
    def merge_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return bias

    def unmerge_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return bias

    # Methods whose merge is not an edit of the one canonical weight (a tuned copy of a whole
    # norm, replaced embedding rows, a bias delta) set ``merges_module`` and fold themselves into
    # the base module with ``merge_module``, keeping what ``unmerge_module`` needs to restore it.
    # With ``safe`` they check the new values with ``weights.check_finite`` before writing any.
    merges_module: ClassVar[bool] = False

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        raise MergeError(f"{type(self).__name__} cannot be merged into the base module.")

    def unmerge_module(self, base: nn.Module) -> None:
        raise MergeError(f"{type(self).__name__} cannot be unmerged from the base module.")


class AdaptedLayer(nn.Module):
    """Replaces a targeted module; keeps it untouched as ``base_layer``."""

    def __init__(self, base_layer: nn.Module, runtime: Runtime) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.merged: list[str] = []  # in merge order
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_layer", "adapters"):
                raise
            # Model code may read e.g. ``self.q_proj.weight``: answer for the base layer.
            return getattr(self._modules["base_layer"], name)

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x is None:  # called with keywords only, as transformers calls attention: self_attn(hidden_states=...)
            x = self._keyword_input(kwargs)
        rt = self._runtime
        if rt.disabled:
            return self.base_layer(x, *args, **kwargs)
        if rt.routing is not None:
            return self._mixed_forward(x, rt.routing, args, kwargs)
        fn: Callable[[torch.Tensor], torch.Tensor] = self.base_layer
        if args or kwargs:
            fn = functools.partial(_call_with_args, self.base_layer, args, kwargs)
        for name in rt.active:
            adapter = self.adapters._modules.get(name)
            if adapter is not None and name not in self.merged:
                if adapter.needs_call_args:
                    fn = functools.partial(adapter, inner=fn, base=self.base_layer, args=args, kwargs=kwargs)
                elif adapter.needs_base:
                    fn = functools.partial(adapter, inner=fn, base=self.base_layer)
                else:
                    fn = functools.partial(adapter, inner=fn)
        return fn(x)

    def _keyword_input(self, kwargs: dict[str, Any]) -> torch.Tensor:
        """Take the input out of a keywords-only call: the base forward's first parameter."""
        name = self.__dict__.get("_input_name")
        if name is None:
            params = list(inspect.signature(self.base_layer.forward).parameters)
            name = self.__dict__["_input_name"] = params[0] if params else ""
        if name not in kwargs:
            raise DeltatuneError(
                f"{type(self.base_layer).__name__} was called without its input {name!r}; "
                "pass the input as the first argument or by that name."
            )
        return kwargs.pop(name)

    def _mixed_forward(self, x: torch.Tensor, routing: Routing, args: tuple, kwargs: dict) -> torch.Tensor:
        used = [self.adapters._modules.get(n) for n in routing.names]
        if self.merged:
            raise MergeError(
                f"Adapters {self.merged} are merged; mixed batches need unmerged adapters. "
                "Call model.unmerge_adapter() first."
            )
        out = self.base_layer(x, *args, **kwargs)
        present = [cast(Adapter, a) for a in used if a is not None]
        if not present:
            return out
        kinds: set[type[Adapter]] = {type(a) for a in present}
        kind = next(iter(kinds))
        if len(kinds) > 1 or kind.mixed_forward is None:
            names = sorted({type(a).__name__ for a in present})
            raise DeltatuneError(
                f"A mixed batch cannot combine adapters of type {names} on one layer; "
                "mixed batches support LoRA adapters (DoRA included) on dense, embedding and convolution layers. "
                "Run these adapters in separate batches."
            )
        index = routing.index_for(x.shape[0], x.device)
        return kind.mixed_forward(used, index, x, out, base=self.base_layer)

    # ----------------------------------------------------------------------------- merging
    def merge(self, names: list[str], safe: bool = False) -> None:
        """Fold the named adapters (those on this layer, not yet merged) into the base layer, in order.

        Consecutive adapters that edit the weight share one read and one write of it; adapters
        that merge themselves (``merges_module``) run their own hook in between. If one fails, the
        ones this call merged are undone, so the layer is never left half-merged.
        """
        todo = [n for n in names if n in self.adapters and n not in self.merged]
        if not todo:
            return
        self._check_merge_order(todo)
        start = len(self.merged)
        try:
            for by_module, run in self._runs(todo):
                if by_module:
                    for name in run:
                        self._adapter(name).merge_module(self.base_layer, safe=safe)
                        self.merged.append(name)
                else:
                    self._merge_weight(run, safe)
                    self.merged.extend(run)
        except BaseException:
            self._unwind(len(self.merged) - start)
            raise

    def _check_merge_order(self, todo: list[str]) -> None:
        """Refuse a merge that would change the outputs: once merged, adapters act first (in merge
        order), below the unmerged active ones, so every active pair whose order that reverses must
        commute (both ``additive``), e.g. LoRA over OFT can merge OFT alone but not LoRA alone."""
        active = [n for n in self._runtime.active if n in self.adapters]
        for i, name in enumerate(active):
            below = [n for n in active[:i] if n not in self.merged]
            if self._adapter(name).reads_stored_weight and below and set(todo) & {name, *below}:
                raise MergeError(
                    f"Adapter {name!r} ({type(self._adapter(name)).__name__}) normalises the stored weight of this "
                    f"{type(self.base_layer).__name__} but acts on the output of the unmerged adapters {below} below "
                    f"it, so merging {sorted(set(todo) & {name, *below})} would change the outputs; nothing was "
                    f"merged. Merge {below} while {name!r} is inactive, or activate {name!r} first."
                )
        place = {name: i for i, name in enumerate(active)}
        merged = [*self.merged, *todo]
        order = [n for n in merged if n in place] + [n for n in active if n not in merged]
        for i, outer in enumerate(order):
            for inner in order[i + 1 :]:
                first, second = self._adapter(outer), self._adapter(inner)
                if place[outer] > place[inner] and not (first.additive and second.additive):
                    kinds = f"{type(first).__name__} and {type(second).__name__}"
                    raise MergeError(
                        f"Cannot merge adapter {outer!r} before adapter {inner!r} on a "
                        f"{type(self.base_layer).__name__}: {inner!r} acts below it in the activation order and "
                        f"{kinds} do not commute, so the merged model would differ. Merge {inner!r} too "
                        f"(merge_adapter([{inner!r}, {outer!r}])) or deactivate it; nothing was merged."
                    )

    def unmerge(self) -> None:
        """Undo every merge, newest first, so stacked methods unwind in the right order."""
        self._unwind(len(self.merged))

    def _unwind(self, count: int) -> None:
        """Unmerge the ``count`` newest merged adapters, newest first."""
        if count <= 0:
            return
        newest_first = list(reversed(self.merged[-count:]))
        for by_module, run in self._runs(newest_first):
            if by_module:
                for name in run:
                    self._adapter(name).unmerge_module(self.base_layer)
                    self.merged.pop()
            else:
                self._unmerge_weight(run)
                del self.merged[-len(run) :]

    def _runs(self, names: list[str]) -> list[tuple[bool, list[str]]]:
        """``names`` cut into runs of consecutive adapters that merge the same way (by module or not)."""
        runs: list[tuple[bool, list[str]]] = []
        for name in names:
            by_module = self._adapter(name).merges_module
            if runs and runs[-1][0] == by_module:
                runs[-1][1].append(name)
            else:
                runs.append((by_module, [name]))
        return runs

    def _merge_weight(self, todo: list[str], safe: bool) -> None:
        weight = weights.read_weight(self.base_layer)
        new = weight.detach().to(torch.float32 if weight.dtype != torch.float64 else weight.dtype)
        bias, new_bias = self._bias_start(new.dtype)
        for name in todo:
            new = self._adapter(name).merge_into(new)
            if new_bias is not None:
                new_bias = self._adapter(name).merge_bias(new_bias)
        if safe and new_bias is not bias and new_bias is not None:
            weights.check_finite(self.base_layer, new_bias, what=f"adapters {todo}")
        weights.write_weight(self.base_layer, new, safe=safe, what=f"adapters {todo}")
        if new_bias is not bias and new_bias is not None:
            weights.write_bias(self.base_layer, new_bias)

    def _unmerge_weight(self, newest_first: list[str]) -> None:
        weight = weights.read_weight(self.base_layer)
        new = weight.detach().to(torch.float32 if weight.dtype != torch.float64 else weight.dtype)
        bias, new_bias = self._bias_start(new.dtype)
        for name in newest_first:
            new = self._adapter(name).unmerge_from(new)
            if new_bias is not None:
                new_bias = self._adapter(name).unmerge_bias(new_bias)
        weights.write_weight(self.base_layer, new)
        if new_bias is not bias and new_bias is not None:
            weights.write_bias(self.base_layer, new_bias)

    def _bias_start(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The base bias in the merge dtype, twice: as the start and as the value adapters edit."""
        bias = weights.base_bias(self.base_layer)
        if bias is None:
            return None, None
        start = bias.detach().to(dtype)
        return start, start

    def _adapter(self, name: str) -> Adapter:
        return cast(Adapter, self.adapters[name])

    def named_adapters(self) -> Iterator[tuple[str, Adapter]]:
        for name, module in self.adapters.items():
            assert isinstance(module, Adapter)
            yield name, module

    def extra_repr(self) -> str:
        return f"merged={self.merged}" if self.merged else ""


def _call_with_args(base: nn.Module, args: tuple, kwargs: dict, x: torch.Tensor) -> torch.Tensor:
    return base(x, *args, **kwargs)
