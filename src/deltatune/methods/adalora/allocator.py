"""AdaLoRA's rank allocator, orthogonality penalty and pruned checkpoints.

The allocator runs after every optimizer step (``DeltaModel.on_optimizer_step``, which calls
:func:`on_optimizer_step`), while the gradients are still there:

- Sensitivity of every weight ``I = |w * grad|``, smoothed ``Ī ← β1 Ī + (1 - β1) I`` and its
  uncertainty ``Ū ← β2 Ū + (1 - β2) |I - Ī|``; a weight scores ``Ī * Ū``.
- A triplet (rank ``i`` of a layer: row ``i`` of Q, ``Λ_i``, column ``i`` of P) scores
  ``S(Λ_i) + mean_j S(Q_ij) + mean_k S(P_ki)``.
- The budget (total kept ranks over all layers) is ``b(0) = Σ r`` up to step ``tinit``, then
  ``b(t) = b_T + (b(0) - b_T) (1 - (t - tinit) / (T - tfinal - tinit))^3`` with ``b_T = target_r``
  times the number of layers, reached at step ``T - tfinal``. Every ``deltaT`` steps the ranks
  scoring at or below the ``b(0) - b(t)``-th smallest score get ``Λ_i = 0``; at ``T - tfinal`` the
  final choice is recorded and re-applied after every later step.

The choice is kept in ``config.rank_pattern`` (``{"<module path>.lora_E": [keep flag per initial
rank]}``, PEFT's format), and a saved adapter holds only the kept ranks, as PEFT writes it.
``global_step`` counts the optimizer steps done before the current one (0 for the first), as in
PEFT's ``update_and_allocate`` and Trainer's ``state.global_step`` at ``on_optimizer_step``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from deltatune.errors import DeltatuneError
from deltatune.methods.adalora.adapter import SvdAdapter
from deltatune.methods.adalora.config import AdaLoraConfig

if TYPE_CHECKING:
    from deltatune.model import DeltaModel

FACTORS = ("lora_A", "lora_E", "lora_B")
_AVG = "ipt_avg_"  # non-persistent buffers of the running statistics, e.g. "ipt_avg_lora_A"
_UNC = "ipt_unc_"


def _config(model: DeltaModel, adapter_name: str) -> AdaLoraConfig:
    config = model.peft_config[adapter_name]
    assert isinstance(config, AdaLoraConfig)
    return config


def _adapters(model: DeltaModel, adapter_name: str) -> Iterator[tuple[str, SvdAdapter]]:
    for path, adapter in model.adapter_modules(adapter_name):
        assert isinstance(adapter, SvdAdapter)
        yield path, adapter


# ------------------------------------------------------------------------------ the schedule
def budget_schedule(config: AdaLoraConfig, step: int, initial: int, target: int) -> tuple[int, bool]:
    """(total ranks allowed at ``step``, whether to re-allocate at this step)."""
    assert config.total_step is not None  # checked by the config
    end = config.total_step - config.tfinal
    if step <= config.tinit:
        return initial, False
    if step > end:
        return target, True
    left = 1 - (step - config.tinit) / (end - config.tinit)
    return int((initial - target) * left**3 + target), step % config.deltaT == 0


def on_optimizer_step(model: DeltaModel, adapter_name: str, global_step: int) -> None:
    """One step of the allocator for adapter ``adapter_name`` (see the module docstring)."""
    config = _config(model, adapter_name)
    adapters = list(_adapters(model, adapter_name))
    if not adapters:
        return
    assert config.total_step is not None
    end = config.total_step - config.tfinal
    if global_step < end:
        update_importance(adapters, config.beta1, config.beta2)
        budget, allocate = budget_schedule(config, global_step, *_budgets(config, adapters))
        if allocate:
            config.rank_pattern = mask_to_budget(adapters, budget)
    elif global_step == end:
        budget, _ = budget_schedule(config, global_step, *_budgets(config, adapters))
        config.rank_pattern = mask_to_budget(adapters, budget)
        reset_importance(adapters)
    elif config.rank_pattern is not None:
        apply_rank_pattern(adapters, config.rank_pattern)


def _budgets(config: AdaLoraConfig, adapters: list[tuple[str, SvdAdapter]]) -> tuple[int, int]:
    """(initial budget: the ranks the layers hold now, final budget: target_r per layer)."""
    return sum(a.r for _, a in adapters), config.target_r * len(adapters)


# ------------------------------------------------------------------------------ importance
def update_importance(adapters: list[tuple[str, SvdAdapter]], beta1: float, beta2: float) -> None:
    """Fold this step's sensitivity ``|w * grad|`` into every weight's running statistics."""
    if adapters and all(getattr(a, f).grad is None for _, a in adapters for f in FACTORS):
        raise DeltatuneError(
            "AdaLoRA's rank allocator found no gradients: call model.on_optimizer_step(step) after "
            "optimizer.step() and before optimizer.zero_grad() (it reads the gradients of this step)."
        )
    with torch.no_grad():
        for _, adapter in adapters:
            for name in FACTORS:
                param = getattr(adapter, name)
                avg, unc = _statistics(adapter, name, param)
                grad = param.grad
                ipt = (param * grad).abs() if grad is not None else torch.zeros_like(param)
                # Written out term by term (not fused) so the scores match PEFT's to the last bit.
                avg.copy_(beta1 * avg + (1 - beta1) * ipt)
                unc.copy_(beta2 * unc + (1 - beta2) * (ipt - avg).abs())


def _statistics(adapter: SvdAdapter, name: str, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    avg = adapter._buffers.get(_AVG + name)
    unc = adapter._buffers.get(_UNC + name)
    if avg is None or unc is None or avg.shape != param.shape:
        # Not saved: the statistics only steer the current run's allocation.
        avg, unc = torch.zeros_like(param, requires_grad=False), torch.zeros_like(param, requires_grad=False)
        adapter.register_buffer(_AVG + name, avg, persistent=False)
        adapter.register_buffer(_UNC + name, unc, persistent=False)
    return avg, unc


def reset_importance(adapters: list[tuple[str, SvdAdapter]]) -> None:
    for _, adapter in adapters:
        for name in FACTORS:
            for prefix in (_AVG, _UNC):
                adapter._buffers.pop(prefix + name, None)


def triplet_scores(adapter: SvdAdapter) -> torch.Tensor:
    """Score of each of the adapter's ranks: (r,)."""

    def score(name: str) -> torch.Tensor:
        avg = adapter._buffers.get(_AVG + name)
        unc = adapter._buffers.get(_UNC + name)
        param = getattr(adapter, name)
        if avg is None or unc is None:
            return torch.zeros_like(param)
        return avg * unc

    q = score("lora_A").mean(dim=1)
    p = score("lora_B").mean(dim=0)
    return score("lora_E").view(-1) + (q + p)


# ------------------------------------------------------------------------------ masking
def mask_to_budget(adapters: list[tuple[str, SvdAdapter]], budget: int) -> dict[str, list[bool]]:
    """Zero Λ for the lowest-scoring ranks so that about ``budget`` ranks stay; the new rank pattern."""
    scores = [triplet_scores(a) for _, a in adapters]
    drop = sum(a.r for _, a in adapters) - budget
    pattern: dict[str, list[bool]] = {}
    threshold = None
    if drop > 0:  # ties at the threshold are all pruned, as in PEFT
        threshold = torch.kthvalue(torch.cat(scores), drop).values
    with torch.no_grad():
        for (path, adapter), score in zip(adapters, scores, strict=True):
            keep = score > threshold if threshold is not None else torch.ones_like(score, dtype=torch.bool)
            adapter.lora_E.masked_fill_(~keep.view(-1, 1), 0.0)
            pattern[f"{path}.lora_E"] = _full_mask(adapter, keep.tolist())
    return pattern


def _full_mask(adapter: SvdAdapter, keep: list[bool]) -> list[bool]:
    """Keep flags over the adapter's rows spread over all init_r ranks (ranks not held: False)."""
    full = [False] * adapter.init_r
    for index, flag in zip(adapter.kept, keep, strict=True):
        full[index] = bool(flag)
    return full


def _row_mask(adapter: SvdAdapter, pattern: dict[str, list[bool]], path: str) -> list[bool] | None:
    """The keep flags of the adapter's own rows, from a rank pattern (None: no entry for it)."""
    full = pattern.get(f"{path}.lora_E")
    return None if full is None else [bool(full[i]) for i in adapter.kept]


def apply_rank_pattern(adapters: list[tuple[str, SvdAdapter]], pattern: dict[str, list[bool]]) -> None:
    """Zero Λ again for the pruned ranks (the optimizer moves them off zero)."""
    with torch.no_grad():
        for path, adapter in adapters:
            rows = _row_mask(adapter, pattern, path)
            if rows is not None and not all(rows):
                keep = torch.tensor(rows, dtype=torch.bool, device=adapter.lora_E.device)
                adapter.lora_E.masked_fill_(~keep.view(-1, 1), 0.0)


# ------------------------------------------------------------------------------ training loss
def orthogonality_loss(model: DeltaModel, adapter_name: str) -> torch.Tensor | None:
    """``orth_reg_weight * mean ||Q Qᵀ - I||_F, ||Pᵀ P - I||_F`` over all layers (None when the weight is 0)."""
    weight = _config(model, adapter_name).orth_reg_weight
    if weight == 0:
        return None
    terms: list[torch.Tensor] = []
    for _, adapter in _adapters(model, adapter_name):
        for gram in (adapter.lora_A @ adapter.lora_A.T, adapter.lora_B.T @ adapter.lora_B):
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            terms.append(torch.linalg.matrix_norm(gram - eye))
    if not terms:
        return None
    return weight * (torch.stack(terms).sum() / len(terms))


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_tensors(
    model: DeltaModel, adapter_name: str, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The tensors to save: for layers with pruned ranks, only the kept rows of Q and Λ and columns of P."""
    from deltatune.checkpoint import PREFIX

    pattern = _config(model, adapter_name).rank_pattern
    if pattern is None:
        return tensors
    out = dict(tensors)
    for path, adapter in _adapters(model, adapter_name):
        rows = _row_mask(adapter, pattern, path)
        if rows is None or all(rows):
            continue
        keep = torch.tensor(rows, dtype=torch.bool)
        for name in FACTORS:
            key = f"{PREFIX}{path}.{name}"
            out[key] = (out[key][:, keep] if name == "lora_B" else out[key][keep]).contiguous()
    return out
