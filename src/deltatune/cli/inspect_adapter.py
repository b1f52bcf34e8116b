"""``deltatune inspect ADAPTER``: what a saved adapter is, read from its folder alone.

Method, targets, ranks, parameter count, size, base model and the library version that wrote it,
from ``adapter_config.json``, the safetensors header (no tensor is loaded) and the model card. The
base model is never loaded. Adapters saved beside "default" (in subfolders) are listed too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from deltatune.errors import CheckpointError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# First component of an adapter tensor's own name, per method family; the key before it is the module.
_ADAPTER_PARTS = re.compile(r"^(lora_|ia3_|hada_|lokr_|oft_|boft_|vera_|fourierft_|hra_|bottleneck_|adapter_)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a saved adapter is (method, targets, ranks, size, base model)",
        description="Describe a saved adapter folder without loading the base model.",
    )
    p.add_argument("adapter", help="adapter folder (holds adapter_config.json)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(run=run)


def describe(folder: str | Path) -> dict[str, Any]:
    """The description :func:`run` prints, as a dict."""
    folder = Path(folder)
    config_path = folder / CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder that holds {CONFIG}.")
    if not config_path.is_file():
        raise CheckpointError(f"No {CONFIG} in {folder}; is this an adapter folder?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}).") from exc
    shapes = _tensor_shapes(folder / WEIGHTS)
    modules: dict[str, list[str]] = {}
    trained_in_full: set[str] = set()
    for key in shapes:
        path = key.removeprefix("base_model.model.").split(".")
        cut = next((i for i, part in enumerate(path) if _ADAPTER_PARTS.match(part)), None)
        if cut is None:
            trained_in_full.add(".".join(path[:-1]))
        else:
            modules.setdefault(".".join(path[:cut]), []).append(".".join(path[cut:]))
    ranks = Counter(
        shapes[f"base_model.model.{m}.lora_A.weight"][0] for m in modules if _has(shapes, m, "lora_A.weight")
    )
    files = [f for f in folder.iterdir() if f.is_file()]
    return {
        "folder": str(folder),
        "method": config.get("peft_type"),
        "task_type": config.get("task_type"),
        "base_model": config.get("base_model_name_or_path"),
        "target_modules": config.get("target_modules"),
        "adapted_modules": len(modules),
        "trained_in_full": sorted(trained_in_full),
        "rank": config.get("r"),
        "ranks": {str(r): n for r, n in sorted(ranks.items())},
        "parameters": sum(math.prod(s) for s in shapes.values()),
        "tensors": len(shapes),
        "size_bytes": sum(f.stat().st_size for f in files),
        "written_by": _writer(folder, config),
        "other_adapters": sorted(p.name for p in folder.iterdir() if (p / CONFIG).is_file()),
    }


def _has(shapes: dict[str, list[int]], module: str, name: str) -> bool:
    return f"base_model.model.{module}.{name}" in shapes


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"No {WEIGHTS} in {path.parent}; the adapter folder is incomplete.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupted or truncated ({exc}).") from exc


def _writer(folder: Path, config: dict[str, Any]) -> str:
    card = folder / "README.md"
    if card.is_file():
        found = re.search(r"written by deltatune (\d\S*)", card.read_text(encoding="utf-8", errors="replace"))
        if found:
            return f"deltatune {found.group(1)}"
        found = re.search(r"PEFT (\d+\.\d+\S*)", card.read_text(encoding="utf-8", errors="replace"))
        if found:
            return f"PEFT {found.group(1)}"
    if config.get("peft_version"):
        return f"PEFT {config['peft_version']}"
    return "unknown"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    info = describe(args.adapter)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ranks = ", ".join(f"r={r} x{n}" for r, n in info["ranks"].items()) or (f"r={info['rank']}" if info["rank"] else "-")
    rows = [
        ("adapter", info["folder"]),
        ("method", f"{info['method']}" + (f" ({info['task_type']})" if info["task_type"] else "")),
        ("base model", info["base_model"] or "unknown"),
        ("targets", f"{info['target_modules']} -> {info['adapted_modules']} modules adapted"),
        ("ranks", ranks),
        ("trained in full", ", ".join(info["trained_in_full"]) or "-"),
        ("parameters", f"{info['parameters']:,d} in {info['tensors']} tensors"),
        ("size", _size(info["size_bytes"])),
        ("written by", info["written_by"]),
    ]
    if info["other_adapters"]:
        rows.append(("other adapters", ", ".join(info["other_adapters"])))
    for name, value in rows:
        print(f"{name:>16s}  {value}")
    return 0
