"""Generate the bundled instruction-tuning (``sft``) dataset and its word-level WordPiece vocabulary.

Three instruction kinds a tiny causal LM can learn from scratch on a CPU in minutes:

- ``reverse``: "Reverse the words: red lamp oak" -> "oak lamp red" (3 to 5 words),
- ``sort``: "Sort these numbers: 42 7 19" -> "7 19 42" (3 to 5 numbers below 100),
- ``brand``: "Extract the product brand from: Anker PowerCore 10000 portable charger, black" -> "anker"
  (marketplace-style titles; the brand is not always the first word).

Every row is ``{"kind", "prompt", "response"}``; prompts are unique across splits. ``vocab.txt``
holds the special tokens, every word of the data (lower case, as the uncased WordPiece tokenizer
splits it) and single characters with their ``##`` continuations, so unseen words still tokenize.
A fixed seed makes reruns byte-identical.

Usage::

    python scripts/make_sft_data.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import random
import re
import string
from pathlib import Path

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 7
SPLIT_SIZES = {"train": 5000, "valid": 240, "test": 360}
KINDS = ("reverse", "sort", "brand")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "sft"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

WORDS = ("red", "blue", "green", "black", "white", "silver", "lamp", "chair", "desk", "table", "cable", "mouse",
         "phone", "case", "bottle", "kettle", "towel", "pillow", "blanket", "jacket", "boots", "socks", "hat",
         "scarf", "watch", "charger", "speaker", "camera", "router", "tablet", "oak", "pine", "steel", "cotton",
         "wool", "leather", "glass", "paper", "small", "large", "soft", "warm", "fast", "quiet", "light", "heavy",
         "river", "stone", "cloud", "garden", "window", "door", "shelf", "basket", "candle", "mirror", "rug",
         "blender", "toaster", "mug")  # fmt: skip
BRANDS = ("anker", "logitech", "samsung", "sony", "philips", "bosch", "ikea", "nike", "adidas", "lego", "dyson",
          "garmin", "canon", "nikon", "lenovo", "asus", "acer", "braun", "tefal", "makita", "razer", "jbl", "bose",
          "casio", "xiaomi", "oral-b", "stanley", "yeti", "hydro flask", "north face")  # fmt: skip
LINES = ("pro", "max", "mini", "ultra", "lite", "plus", "go", "air", "elite", "classic", "sport", "neo")
NOUNS = ("wireless earbuds", "portable charger", "gaming mouse", "electric kettle", "water bottle", "hiking boots",
         "running shoes", "smart watch", "bluetooth speaker", "desk lamp", "power drill", "toaster", "backpack",
         "headphones", "keyboard", "coffee grinder", "blender", "rain jacket")  # fmt: skip
EXTRAS = ("black", "white", "blue", "2 pack", "for kids", "with case", "new", "2024 model", "fast charging",
          "waterproof", "lightweight", "usb-c")  # fmt: skip


def title_case(words: str) -> str:
    return " ".join(w if any(c.isdigit() for c in w) else w.capitalize() for w in words.split())


def make_row(rng: random.Random, kind: str) -> dict[str, str]:
    if kind == "reverse":
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 5))]
        intro = rng.choice(("Reverse the words:", "Reverse the order of the words:", "Write these words backwards:"))
        return {"kind": kind, "prompt": f"{intro} {' '.join(words)}", "response": " ".join(reversed(words))}
    if kind == "sort":
        numbers = [rng.randint(0, 99) for _ in range(rng.randint(3, 5))]
        intro = rng.choice(("Sort these numbers:", "Sort from smallest to largest:", "Put in ascending order:"))
        return {"kind": kind, "prompt": f"{intro} {' '.join(map(str, numbers))}",
                "response": " ".join(map(str, sorted(numbers)))}  # fmt: skip
    brand = rng.choice(BRANDS)
    parts = [title_case(brand), title_case(rng.choice(LINES)), str(rng.choice((2, 3, 5, 10, 20, 100, 300, 500)))]
    noun = rng.choice(NOUNS)
    extras = rng.sample(EXTRAS, rng.randint(0, 2))
    # 30%: the brand in the middle ("Wireless Earbuds by Sony Pro 3")
    title = f"{title_case(noun)} by {' '.join(parts)}" if rng.random() < 0.3 else f"{' '.join(parts)} {noun}"
    title = ", ".join([title, *extras])
    intro = rng.choice(("Extract the product brand from:", "Which brand is this product:", "Name the brand:"))
    return {"kind": kind, "prompt": f"{intro} {title}", "response": brand}


def generate(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for name, size in SPLIT_SIZES.items():
        rows: list[dict[str, str]] = []
        while len(rows) < size:
            row = make_row(rng, KINDS[len(rows) % len(KINDS)])
            if row["prompt"] not in seen:
                seen.add(row["prompt"])
                rows.append(row)
        rng.shuffle(rows)
        splits[name] = rows
    return splits


def vocabulary(splits: dict[str, list[dict[str, str]]]) -> list[str]:
    """Special tokens, every lower-cased word and punctuation mark of the data, single characters."""
    words: set[str] = set()
    for rows in splits.values():
        for row in rows:
            words.update(re.findall(r"\w+|[^\w\s]", f"{row['prompt']} {row['response']}".lower()))
    chars = list(string.ascii_lowercase + string.digits)
    pieces = set(chars) | {f"##{c}" for c in chars} | set(string.punctuation)
    return [*SPECIALS, *sorted(words | pieces)]


def write(splits: dict[str, list[dict[str, str]]], out_dir: Path) -> None:
    write_splits(splits, out_dir)
    (out_dir / "vocab.txt").write_text("\n".join(vocabulary(splits)) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    args = parser.parse_args(argv)
    splits = generate(args.seed)
    write(splits, args.out)
    report_splits(splits, args.out)
    print(f"vocabulary: {len(vocabulary(splits))} tokens -> {args.out / 'vocab.txt'}")


if __name__ == "__main__":
    main()
