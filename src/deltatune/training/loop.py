"""The training loop: one readable function, :func:`fit`, on ``accelerate``.

One optimizer step reads ``grad_accum`` micro-batches. Each micro-batch's loss is the *sum* over
its items (examples, or target tokens) divided by the item count of the whole step, so the
gradient is the mean over every item of the step however the items fall into micro-batches.
Method-specific work (AdaLoRA's budget, gradient masks, logging) plugs in through :class:`Hooks`.
Checkpoints (see :mod:`deltatune.training.state`) make a killed run resume to the same result.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltatune.training.config import EvalConfig, OutputConfig, TrainConfig
from deltatune.training.errors import RecipeError
from deltatune.training.records import METRICS, MetricsLog, write_plots
from deltatune.training.state import (
    Progress,
    checkpoints,
    load_checkpoint,
    restore,
    rng_state,
    save_checkpoint,
    snapshot,
)
from deltatune.training.tasks import Task


@dataclass
class StepInfo:
    """What a hook sees: the state right after the point it is called at."""

    # Optimizer steps completed when the hook runs, as Trainer's ``state.global_step``: during a step
    # (after_backward, after_optimizer_step) the step in progress is not counted yet, so the first is 0.
    step: int
    epoch: int
    model: nn.Module  # the unwrapped model
    optimizer: torch.optim.Optimizer
    loss: float | None = None  # mean loss of the step's items
    metrics: dict[str, float] | None = None  # after_eval only


Hook = Callable[[StepInfo], None]
LossTerm = Callable[[], "torch.Tensor | None"]


@dataclass
class Hooks:
    """Callables run at fixed points of every step; a method adds its own instead of a branch in the loop."""

    after_backward: list[Hook] = field(default_factory=list)  # gradients ready, before clipping
    after_optimizer_step: list[Hook] = field(default_factory=list)  # weights updated, gradients not yet zeroed
    after_eval: list[Hook] = field(default_factory=list)
    # Regularisers added once to each step's mean loss (AdaLoRA's orthogonality term); None = nothing.
    loss_terms: list[LossTerm] = field(default_factory=list)

    @classmethod
    def for_model(cls, model: nn.Module) -> Hooks:
        """The hooks a model asks for: ``model.on_optimizer_step(global_step)`` and ``model.training_loss()``
        if it has them (a DeltaModel runs its adapters' methods' ones: AdaLoRA's budget and regulariser)."""
        hooks = cls()
        on_step = getattr(model, "on_optimizer_step", None)
        if callable(on_step):
            hooks.after_optimizer_step.append(lambda info: on_step(info.step))
        training_loss = getattr(model, "training_loss", None)
        if callable(training_loss):
            hooks.loss_terms.append(training_loss)
        return hooks


@dataclass
class FitResult:
    progress: Progress
    metrics: dict[str, float]  # of the model returned: the best evaluation if eval.keep_best
    total_steps: int
    wall_s: float
    items_per_s: float  # items as the task counts them (Task.count): examples, or target tokens


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier after ``step`` scheduler steps: linear warmup, then the decay."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - done)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
        return 1.0

    return factor


def epoch_batches(n_rows: int, epoch: int, cfg: TrainConfig, seed: int, world: int, rank: int) -> list[list[list[int]]]:
    """Row indexes of every optimizer step of ``epoch``: steps -> micro-batches -> rows (this process's share)."""
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    per_step = cfg.batch_size * cfg.grad_accum * world
    steps = []
    for start in range(0, n_rows, per_step):
        chunk = order[start : start + per_step]
        if len(chunk) < world:  # every process needs a batch, or the gradient sync would wait forever
            break
        mine = chunk[rank::world]
        steps.append([mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)])
    return steps


def on_cpu(cfg: TrainConfig) -> bool:
    """``train.cpu``, or several processes launched (torchrun, ``accelerate launch``) on a machine without an
    accelerator: accelerate then needs ``cpu=True`` to join them over gloo instead of running each alone."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return cfg.cpu or (launched and not torch.accelerator.is_available())


def process_state(cfg: TrainConfig) -> Any:
    """accelerate's ``PartialState``: this process's rank among those launched (joins them on first use)."""
    from accelerate import PartialState

    return PartialState(cpu=on_cpu(cfg))


def make_accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = on_cpu(cfg)
    try:
        try:
            return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)
        except ValueError as exc:  # a single process that trained before with another precision
            if "already been initialized" not in str(exc) or PartialState().num_processes > 1:
                raise
            AcceleratorState._reset_state()
            return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)
    except ValueError as exc:  # e.g. fp16 without a GPU
        raise RecipeError(f"train.mixed_precision={cfg.mixed_precision!r} cannot be used here: {exc}") from exc


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute activations in backward (transformers models; 5.x names it activation checkpointing)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if callable(enable):
        enable({"use_reentrant": False})
        return
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if not callable(enable):
        raise RecipeError("train.gradient_checkpointing needs a transformers model (gradient_checkpointing_enable).")
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "loraplus":
        from deltatune.optim import loraplus

        return loraplus(model, lr=cfg.lr, ratio=cfg.loraplus_ratio, weight_decay=cfg.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RecipeError("The model has no trainable parameters; add an adapter or unfreeze a head.")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def track_best(progress: Progress, metrics: dict[str, float], cfg: EvalConfig, higher: frozenset[str]) -> bool:
    """Update the best metric and the early-stopping count; True if this evaluation is the best so far."""
    if cfg.metric not in metrics:
        raise RecipeError(f"eval.metric={cfg.metric!r} is not a metric of this task; use one of {sorted(metrics)}.")
    value, best = metrics[cfg.metric], progress.best_metric
    if best is None or (value > best if cfg.metric in higher else value < best):
        progress.best_metric, progress.best_step, progress.bad_evals = value, progress.step, 0
        progress.best_metrics = dict(metrics)
        return True
    progress.bad_evals += 1
    progress.stopped_early = bool(cfg.patience) and progress.bad_evals >= cfg.patience
    return False


def fit(
    model: nn.Module,
    task: Task,
    train_rows: Sequence[dict[str, Any]],
    eval_rows: Sequence[dict[str, Any]],
    cfg: TrainConfig,
    eval_cfg: EvalConfig,
    out_cfg: OutputConfig,
    run_dir: Path,
    hooks: Hooks | None = None,
    resume: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train ``model``'s trainable parameters on ``train_rows``; checkpoints and records go to ``run_dir``.

    With ``resume`` and a checkpoint in ``run_dir`` the run continues from it. Returns with the
    best evaluated weights loaded (``eval_cfg.keep_best``) or the last ones.

    Launched as several processes (DDP), each trains on its share of every step's rows; only the main
    process evaluates (the others receive its metrics) and writes checkpoints, records and plots.
    """
    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    accelerator = make_accelerator(cfg)
    hooks = hooks if hooks is not None else Hooks.for_model(model)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    steps_per_epoch = len(epoch_batches(len(train_rows), 0, cfg, cfg.seed, world, rank))
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup) if cfg.warmup >= 1 else round(cfg.warmup * total)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, warmup, total))
    model, optimizer = accelerator.prepare(model, optimizer)
    plain = accelerator.unwrap_model(model)
    params = [p for p in model.parameters() if p.requires_grad]

    log = MetricsLog(run_dir / METRICS)
    progress, best = Progress(data_seed=cfg.seed), None
    found = checkpoints(run_dir, clean=main) if resume else []
    if found:  # each process restores its own random state
        progress, best = load_checkpoint(found[-1], plain, optimizer, scheduler, rank=rank, world=world)
        if main:
            log.truncate(progress.step)
    else:
        if main:
            log.path.unlink(missing_ok=True)
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
    progress.world = world
    accelerator.wait_for_everyone()  # every process has read the checkpoint before the main one writes

    def info(step: int, **kw: Any) -> StepInfo:
        return StepInfo(step=step, epoch=progress.epoch, model=plain, optimizer=optimizer, **kw)

    def evaluate() -> dict[str, float]:
        """The main process evaluates the unwrapped model (no collectives); the others get its metrics."""
        metrics: dict[str, float] = {}
        if main:
            plain.eval()
            with torch.no_grad(), accelerator.autocast():
                metrics = task.evaluate(plain, eval_rows, eval_cfg.batch_size)
            plain.train()
        if world > 1:
            from accelerate.utils import broadcast_object_list

            metrics = broadcast_object_list([metrics])[0]
        return metrics

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=progress.step, desc=desc, unit="step", dynamic_ncols=True,
               disable=not out_cfg.progress or not accelerator.is_local_main_process)  # fmt: skip
    metrics: dict[str, float] = {}
    window_loss, window_items, window_start = 0.0, 0, time.perf_counter()
    seen, first_step = 0, progress.step
    model.train()
    batches_epoch, batches = -1, []
    while progress.step < total and not progress.stopped_early:
        if batches_epoch != progress.epoch:
            batches_epoch = progress.epoch
            batches = epoch_batches(len(train_rows), progress.epoch, cfg, progress.data_seed, world, rank)
        micro = [task.collate([train_rows[i] for i in idx]) for idx in batches[progress.batch]]
        items = sum(task.count(b) for b in micro)
        step_items = (
            int(accelerator.reduce(torch.tensor(items, device=accelerator.device), "sum")) if world > 1 else items
        )
        # DDP averages gradients over processes; scaling by world / items makes it the mean over all items.
        scale = world / step_items
        step_loss = 0.0
        for i, batch in enumerate(micro):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            sync = accelerator.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                with accelerator.autocast():
                    loss = task.loss_sum(model, batch)
                    terms = [t for t in (term() for term in hooks.loss_terms) if t is not None]
                # A regulariser counts once per item, so it adds to the step's mean loss exactly once.
                extra = sum(terms) * task.count(batch) if terms else 0.0
                accelerator.backward((loss + extra) * scale)
            step_loss += float(loss.detach())
        if world > 1:  # the loss of the step's items on every process
            total_loss = torch.tensor(step_loss, dtype=torch.float64, device=accelerator.device)
            step_loss = float(accelerator.reduce(total_loss, "sum"))
        for hook in hooks.after_backward:
            hook(info(progress.step, loss=step_loss / step_items))
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        for hook in hooks.after_optimizer_step:  # before zero_grad: AdaLoRA's budget reads the gradients
            hook(info(progress.step, loss=step_loss / step_items))
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        progress.step += 1
        progress.batch += 1
        epoch_done = progress.batch >= len(batches)
        if epoch_done:
            progress.epoch, progress.batch = progress.epoch + 1, 0
        window_loss, window_items, seen = window_loss + step_loss, window_items + step_items, seen + step_items
        lr = scheduler.get_last_lr()[0]
        bar.update()
        if progress.step % out_cfg.log_every == 0 or progress.step == total:
            rate = window_items / max(1e-9, time.perf_counter() - window_start)
            record = {"step": progress.step, "epoch": progress.epoch, "loss": window_loss / window_items,
                      "lr": lr, "items_per_s": rate}  # fmt: skip
            if main:
                log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", items_s=f"{rate:.0f}")
            window_loss, window_items, window_start = 0.0, 0, time.perf_counter()

        due = progress.step % eval_cfg.every == 0 if eval_cfg.every else epoch_done
        if eval_rows and (due or progress.step == total):
            metrics = evaluate()
            if main:
                record = {
                    "step": progress.step,
                    "epoch": progress.epoch,
                    **{f"eval_{k}": v for k, v in metrics.items()},
                }
                samples = getattr(task, "last_samples", None)  # e.g. generated text, for people reading the log
                log.write({**record, "samples": samples} if samples else record)
            if track_best(progress, metrics, eval_cfg, task.higher_is_better) and eval_cfg.keep_best:
                best = snapshot(plain)
            for hook in hooks.after_eval:
                hook(info(progress.step, metrics=metrics))
        if out_cfg.save_every and progress.step % out_cfg.save_every == 0 and progress.step < total:
            if not progress.stopped_early:  # (the same on every process: they share the metrics)
                rngs = [rng_state()]
                if world > 1:  # every process's random state, so each resumes its own dropout masks
                    from accelerate.utils import gather_object

                    rngs = gather_object(rngs)
                if main:
                    save_checkpoint(run_dir, plain, optimizer, scheduler, progress, best, out_cfg.keep_checkpoints,
                                    rngs)  # fmt: skip
            accelerator.wait_for_everyone()
    bar.close()

    if eval_cfg.keep_best and best is not None:
        restore(plain, best)
        metrics = dict(progress.best_metrics or metrics)
    if main:
        write_plots(log.read(), run_dir, title=desc)
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # drop prepare's autocast forward: the model as given
    wall = time.perf_counter() - started
    return FitResult(progress, metrics, total, wall, seen / max(1e-9, wall) if progress.step > first_step else 0.0)
