"""``deltatune merge TARGET OUT``: fold an adapter into its base model and write a plain model folder.

TARGET is a run folder (or a recipe with ``--adapter``): the task knows the model class; or an
adapter folder: its ``base_model_name_or_path`` (or ``--base``) and ``task_type`` pick the model
class, and a classification head's size is read from the checkpoint. The merged model loads with
plain transformers (``from_pretrained(OUT)``), no deltatune needed. OUT is written to a temporary
folder first and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from deltatune.errors import CheckpointError, DeltatuneError

# adapter_config task_type -> transformers auto class name.
AUTO_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}


def add_parser(sub: Any) -> None:
    from deltatune.cli.runs import add_target_arguments

    p = sub.add_parser(
        "merge",
        help="write the base model with an adapter merged in (a plain transformers folder)",
        description="Merge an adapter into its base model and save the result with save_pretrained: TARGET is a "
        "run folder, a recipe (with --adapter), or an adapter folder (base from its config or --base).",
    )
    add_target_arguments(p)
    p.add_argument("out", help="folder to write the merged model to")
    p.add_argument("--base", help="base model folder or Hub id, for an adapter folder (default: from its config)")
    p.add_argument("--safe", action="store_true", help="refuse to merge if the result holds NaN or Inf")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=run)


def _head_sizes(folder: Path, task_type: str | None) -> dict[str, int]:
    """num_labels of a classification head saved in the adapter (modules_to_save), if any."""
    from safetensors import safe_open

    from deltatune.integrations.transformers import TASK_HEADS

    heads = TASK_HEADS.get(task_type or "", ())
    weights = folder / "adapter_model.safetensors"
    if task_type not in ("SEQ_CLS", "TOKEN_CLS") or not weights.is_file():
        return {}
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
            parts = key.split(".")
            if len(parts) >= 2 and parts[-2] in heads and parts[-1] == "weight":
                return {"num_labels": int(fh.get_slice(key).get_shape()[0])}
    return {}


def _adapter_folder_model(folder: Path, base: str | None) -> tuple[nn.Module, str]:
    import transformers

    from deltatune.training.tasks import load_pretrained

    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / 'adapter_config.json'} is not valid JSON ({exc}).") from exc
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{folder} does not name its base model; pass --base MODEL (a folder or Hub id).")
    task_type = config.get("task_type")
    auto = getattr(transformers, AUTO_CLASSES.get(task_type or "", "AutoModel"))
    return load_pretrained(auto, base, **_head_sizes(folder, task_type)), base


def run(args: argparse.Namespace) -> int:
    import deltatune as dt
    from deltatune.cli.runs import open_target

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DeltatuneError(f"{out} exists; pass --overwrite to replace it, or choose another folder.")
    target = Path(args.target)
    model: Any
    tokenizer: Any = None  # the task's own tokenizer, when a run or recipe is merged
    if (target / "adapter_config.json").is_file():
        base_model, tokenizer_source = _adapter_folder_model(target, args.base)
        model = dt.DeltaModel.from_pretrained(base_model, str(target))
        adapter_dir = target
    else:
        opened = open_target(args.target, args.adapter, args.overrides)
        model, adapter_dir = opened.model, opened.adapter_dir
        tokenizer, tokenizer_source = getattr(opened.setup.task, "tokenizer", None), opened.recipe.model.path
    merged = model.merge_and_unload(safe_merge=args.safe)
    if not hasattr(merged, "save_pretrained"):
        raise DeltatuneError(f"The merged model ({type(merged).__name__}) has no save_pretrained; save it in Python.")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp)
        try:
            from transformers import AutoTokenizer

            (tokenizer or AutoTokenizer.from_pretrained(tokenizer_source)).save_pretrained(tmp)
        except (OSError, ValueError):
            print(f"note: no tokenizer found at {tokenizer_source}; the merged folder holds the model only")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"merged {adapter_dir} into its base model -> {out}")
    return 0
