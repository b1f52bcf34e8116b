"""LoRA on raw parameters (``LoraConfig.target_parameters``), e.g. fused MoE expert weights.

Some layers keep their weights as plain ``nn.Parameter`` tensors and use them in their own
forward (a transformers ``*Experts`` module holds ``gate_up_proj`` as one (experts, out, in)
tensor). Such a parameter has no Linear to wrap, so the module that owns it is wrapped, and the
adapter runs that module with each targeted parameter replaced by ``W + ΔW`` for the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.methods.lora.adapter import LoraAdapter, reset_factors


class LoraParameter(LoraAdapter):
    """LoRA on one parameter of a module (Hu et al., 2021), in PEFT's ``target_parameters`` layout.

    Update rule: the module runs with ``W' = W + s ΔW``, ``s = alpha / r`` (rsLoRA: ``/ sqrt(r)``).
    For a 2-D ``W (out, in)``: ``ΔW = B A`` with ``lora_A: (r, in)``, ``lora_B: (out, r)``. For a 3-D
    stack of ``E`` experts, ``W (E, out, in)`` (or ``(E, in, out)`` when the module sets
    ``is_transposed``): ``lora_A: (E r, in)`` holds expert e's ``A_e`` in rows ``e r .. e r + r - 1`` and
    ``lora_B: (out, r E)`` holds ``B_e`` in columns ``e, E + e, 2E + e, ...`` (PEFT's packing), and
    ``ΔW[e] = B_e A_e``. No dropout (the input never meets the factors). Several targeted
    parameters of one module nest: the adapter of the parameter registered later holds the earlier
    one as ``base_layer``, which gives PEFT's checkpoint keys (``base_layer.lora_A.weight``, ...).
    """

    needs_base = True  # type: ignore[assignment]  # the parameters to update are the base's
    merges_module = True  # the merged tensors are named parameters, not a ``weight``

    def __init__(
        self,
        param_name: str,
        shape: tuple[int, ...],
        transposed: bool,
        r: int,
        alpha: float,
        rs: bool,
        below: LoraParameter | None,
    ) -> None:
        super().__init__(r, alpha, 0.0, rs)
        self.param_name = param_name
        self.shape = shape
        self.experts = shape[0] if len(shape) == 3 else 1
        self.transposed = transposed and len(shape) == 3  # stored (E, in, out)
        out_f, in_f = (shape[2], shape[1]) if self.transposed else (shape[-2], shape[-1])
        self.lora_A = nn.Linear(in_f, r * self.experts, bias=False)
        self.lora_B = nn.Linear(r * self.experts, out_f, bias=False)
        if below is not None:
            self.base_layer = below

    def chain(self) -> list[LoraParameter]:
        """This adapter and those nested under it, outermost first."""
        below = self._modules.get("base_layer")
        return [self, *(below.chain() if isinstance(below, LoraParameter) else [])]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A.weight, self.lora_B.weight

    def reset(self, init: bool | str) -> None:
        for adapter in self.chain():
            reset_factors(adapter.lora_A.weight, adapter.lora_B.weight, adapter.r, init)

    def _expert_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lhs, rhs) with ``ΔW = lhs @ rhs`` in the stored layout: (E, out, r) @ (E, r, in), or transposed."""
        a = self.lora_A.weight.view(self.experts, self.r, -1)  # (E, r, in)
        b = self.lora_B.weight.view(-1, self.r, self.experts).permute(2, 0, 1)  # (E, out, r)
        return (a.transpose(1, 2), b.transpose(1, 2)) if self.transposed else (b, a)

    def delta_weight(self) -> torch.Tensor:
        """``s ΔW`` in the parameter's own shape and layout."""
        if len(self.shape) == 2:
            return (self.lora_B.weight @ self.lora_A.weight) * self.scaling
        lhs, rhs = self._expert_factors()
        return torch.bmm(lhs, rhs) * self.scaling

    def updated(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight + s ΔW`` in ``weight``'s dtype, in one fused op."""
        if len(self.shape) == 2:
            a, b = self.lora_A.weight.to(weight.dtype), self.lora_B.weight.to(weight.dtype)
            return torch.addmm(weight, b, a, alpha=self.scaling)
        lhs, rhs = self._expert_factors()
        return torch.baddbmm(weight, lhs.to(weight.dtype), rhs.to(weight.dtype), alpha=self.scaling)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[..., Any], base: nn.Module | None = None
    ) -> Any:
        assert base is not None, "AdaptedLayer passes the base module to adapters with needs_base"
        # Read at call time: an adapter below this one may already have replaced the parameters.
        new = {a.param_name: a.updated(base._parameters[a.param_name]) for a in self.chain()}  # type: ignore[arg-type]
        with _substituted(base, new):
            return inner(x)

    # ------------------------------------------------------------------ merging
    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        self._write(base, sign=1.0, safe=safe)

    def unmerge_module(self, base: nn.Module) -> None:
        self._write(base, sign=-1.0, safe=False)

    def _write(self, base: nn.Module, sign: float, safe: bool) -> None:
        """Add (``sign=1``) or subtract every update of the chain, computed in fp32 (fp64 for fp64)."""
        with torch.no_grad():
            new = {}
            for adapter in self.chain():
                param = base._parameters[adapter.param_name]
                assert param is not None
                dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
                new[adapter.param_name] = param.detach().to(dtype) + sign * adapter.delta_weight().to(dtype)
                if safe:
                    weights.check_finite(base, new[adapter.param_name], what=f"the LoRA on {adapter.param_name}")
            for name, value in new.items():
                param = base._parameters[name]
                assert param is not None
                param.copy_(value.to(param.dtype))

    def extra_repr(self) -> str:
        return f"{self.param_name}: shape={self.shape}, r={self.r}, scaling={self.scaling:g}"


@contextlib.contextmanager
def _substituted(base: nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """``base`` reads ``tensors`` under their parameter names inside the block (as
    ``torch.func.functional_call`` does); the stored parameters come back, untouched, whatever happens."""
    saved = {name: base._parameters[name] for name in tensors}
    base._parameters.update(tensors)  # type: ignore[arg-type]
    try:
        yield
    finally:
        base._parameters.update(saved)


def create_parameter_lora(
    base: nn.Module, name: str, params: list[str], r: int, alpha: float, rs: bool, init: bool | str
) -> LoraParameter:
    """The adapter chain for the parameters ``params`` of ``base`` (registration order: innermost first),
    on the base's device, in fp32 (fp64 for fp64 parameters)."""
    with torch.device(weights.module_device(base)):
        adapter = _chain(base, name, params, r, alpha, rs)
        adapter.reset(init)
    wide = any(base._parameters[p].dtype == torch.float64 for p in params)  # type: ignore[union-attr]
    return adapter.to(dtype=torch.float64 if wide else torch.float32)


def _chain(base: nn.Module, name: str, params: list[str], r: int, alpha: float, rs: bool) -> LoraParameter:
    transposed = bool(getattr(base, "is_transposed", False))  # transformers' flag for (E, in, out) experts
    adapter: LoraParameter | None = None
    for param_name in params:
        param = base._parameters[param_name]
        assert param is not None
        if param.dim() not in (2, 3) or not param.dtype.is_floating_point:
            raise UnsupportedLayerError(
                f"target_parameters selects {name}.{param_name}, a {param.dim()}-D {param.dtype} tensor; LoRA adapts "
                "2-D (out, in) and 3-D (experts, out, in) float parameters. Remove it from target_parameters."
            )
        adapter = LoraParameter(param_name, tuple(param.shape), transposed, r, alpha, rs, adapter)
    assert adapter is not None
    return adapter
